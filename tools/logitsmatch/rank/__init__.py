"""Code that runs inside the processes of a run: the zygote, the ranks it forks (megatron-core's
engine, coordinator and client), the synthetic-weights writer. The only subpackage that may
import torch or megatron-core at module level; the harness reaches it through ``run.runfiles``."""
