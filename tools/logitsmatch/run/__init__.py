"""Planning and launching a run from the harness process: platform decisions, the plan, the
synthetic checkpoint cache, ports, the launcher, and the run-directory contract (``runfiles``)
shared with the rank processes. Nothing here imports torch or megatron-core at module level."""
