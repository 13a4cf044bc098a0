"""A planted megatron-core history for the watch's tests, and a runner whose suite runs take milliseconds.

The repository (built here: CI has no network) holds a tiny ``megatron/core`` whose numbers come from three of its
files, then 30 commits after the tagged first one, most of them harmless (a comment in a file no number reads):

* commit 5 moves only the MoE sibling (``transformer/moe/moe_utils.py``);
* commit 16 cannot be imported (a syntax error in ``activations.py``) and commit 17 repairs it;
* commit 19 touches three files of which one (``transformer/mlp.py``) moves the dense suite;
* commit 23 moves every suite (``activations.py``);
* commit 27 fixes the planted chunked-prefill bug (``inference/contexts/dynamic_context.py``): the finding's check
  flips there, and no suite moves.

The runner installs each tree exactly as the watch does (``gitsource.install_commit``: ``git archive`` and a
dist-info) and "runs" a suite as a fresh interpreter importing that tree and writing a golden-format result: the
suite's logprobs shifted by what the tree's files say, one prompt logprob off on the chunked path while the bug is
there. So the watch's walk, store, bisection, proofs and findings are tested for real, without the minutes a real
suite run takes (those are explain's tests' business: tests/inference/test_explain.py).

Run as a script (``python planted_watch.py REPO OUT EVERY [DELAY_S]``) it watches the repository into OUT: the
subprocess the resume test kills.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from logitsmatch.errors import BadInput
from logitsmatch.explain import gitsource
from logitsmatch.explain.suite_runs import first_error_line
from logitsmatch.explain.upstream import Finding
from logitsmatch.explain.watch import Source, Watch
from logitsmatch.explain.watch_store import Outcome, Store
from support.planted import git

MOE = "gpt_dynamic_inference_tp4_etp1_pp1_ep8_tiny_logitsmatch_zmq"
DENSE = "gpt_dynamic_inference_tp8_pp1_dp1_tiny_logitsmatch_zmq"
SUITES = [DENSE, MOE]
COMMITS = 30
MOE_ONLY, BROKEN, REPAIR, SEVERAL_FILES, EVERY_SUITE, CHUNKED_FIX = 5, 16, 17, 19, 23, 27
ACTIVATIONS = "megatron/core/activations.py"
MOE_UTILS = "megatron/core/transformer/moe/moe_utils.py"
MLP = "megatron/core/transformer/mlp.py"
CONTEXT = "megatron/core/inference/contexts/dynamic_context.py"
QUIET = ("megatron/core/notes_a.py", "megatron/core/notes_b.py", "megatron/core/notes_c.py")
FINDING = Finding("planted-chunked-prefill", "planted: chunked prefill's boundary logprob", "chunked-prefill",
                  ("core_v0.0.1",), DENSE, (), ("--schedule", "chunked"), 1e-3)

FILES = {
    "megatron/core/__init__.py": "",
    "megatron/core/package_info.py": "MAJOR = 0\nMINOR = 0\nPATCH = 1\nPRE_RELEASE = ''\n",
    ACTIVATIONS: "SCALE = 1.0\n",
    MOE_UTILS: "EXPERT_ORDER_SHIFT = 0.0\n",
    MLP: "DENSE_SHIFT = 0.0\n",
    CONTEXT: "BOUNDARY_TAKES_SAMPLED_TOKEN = True\n",
    **{name: "# notes\n" for name in QUIET},
}
PLANTED = {  # commit number -> (subject, {file: (old, new)})
    MOE_ONLY: ("Unsorted top-k at inference (#4414)", {MOE_UTILS: ("= 0.0", "= 2.0**-20")}),
    BROKEN: ("Refactor activations (#4500)", {ACTIVATIONS: ("SCALE = 1.0", "SCALE = = 1.0")}),
    REPAIR: ("Fix the activations refactor (#4501)", {ACTIVATIONS: ("SCALE = = 1.0", "SCALE = 1.0")}),
    SEVERAL_FILES: ("Fuse the MLP bias (#4600)", {MLP: ("= 0.0", "= 2.0**-21"), QUIET[0]: ("# notes", "# notes 2"),
                                                  QUIET[1]: ("# notes", "# notes 2")}),
    EVERY_SUITE: ("Scale activations in fp32 (#4700)", {ACTIVATIONS: ("SCALE = 1.0", "SCALE = 1.0 + 2.0**-19")}),
    CHUNKED_FIX: ("Take the prompt token at chunk boundaries (#4800)",
                  {CONTEXT: ("= True", "= False")}),
}

# The "suite run": the tree's numbers as a golden-format result (argv: suite, options, result path).
PROGRAM = """
import json, sys
from megatron.core import activations
from megatron.core.inference.contexts import dynamic_context
from megatron.core.transformer import mlp
from megatron.core.transformer.moe import moe_utils

suite, options, path = sys.argv[1:]
shift = moe_utils.EXPERT_ORDER_SHIFT if "ep8" in suite else mlp.DENSE_SHIFT
prompt = [-1.5 * activations.SCALE + shift, -2.25 * activations.SCALE, -0.5]
if "chunked" in options and dynamic_context.BOUNDARY_TAKES_SAMPLED_TOKEN:
    prompt[1] = -0.25
request = {"input_prompt": "p q r s", "generated_text": " a b c", "generated_tokens": [11, 12, 13],
           "logprobs": prompt + [-0.1, -0.2, -0.3]}
with open(path, "w") as handle:
    json.dump({"0": request, "1": dict(request)}, handle)
"""


def history(repo: Path, commits: int = COMMITS, planted: dict | None = None) -> list[str]:
    """The planted repository: tag ``core_v0.0.1``, then ``commits`` commits; their shas, the tag's first."""
    planted = PLANTED if planted is None else planted
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    for name, text in FILES.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "megatron-core 0.0.1")
    git(repo, "tag", "core_v0.0.1")
    shas = [git(repo, "rev-parse", "HEAD").strip()]
    for number in range(1, commits + 1):
        subject, edits = planted.get(number, (f"docs: note {number}", {QUIET[number % 3]: ("# notes", "# notes")}))
        for name, (old, new) in edits.items():
            text = (repo / name).read_text()
            assert old in text, f"{name} has no {old!r}"
            (repo / name).write_text(text.replace(old, new, 1) + ("" if number in planted else f"# {number}\n"))
        git(repo, "commit", "-q", "-am", subject)
        shas.append(git(repo, "rev-parse", "HEAD").strip())
    return shas


def runner(repo: Path, cache: Path, delay_s: float = 0.0):
    """Runs each job as the watch's runner does, in milliseconds (``delay_s`` more each: the resume test's pace)."""

    def run(jobs, results_root: Path):
        for job in jobs:
            started = time.monotonic()
            try:
                folder, _ = gitsource.install_commit("megatron-core", repo, job.tree.sha, cache, sys.executable, None,
                                                     job.tree.take)
            except BadInput as exc:
                yield Outcome(None, str(exc), time.monotonic() - started)
                continue
            result = results_root / job.suite_key / job.tree.name / "result.json"
            result.parent.mkdir(parents=True, exist_ok=True)
            completed = subprocess.run([sys.executable, "-c", PROGRAM, job.suite, " ".join(job.options), str(result)],
                                       env={"PYTHONPATH": str(folder), "PATH": os.environ.get("PATH", "")},
                                       capture_output=True, text=True)
            time.sleep(delay_s)
            wall = time.monotonic() - started
            yield (Outcome(result, None, wall) if completed.returncode == 0 else
                   Outcome(None, f"exit {completed.returncode}: {first_error_line(completed.stderr)}", wall))

    return run


def watch(repo: Path, out: Path, every: int, budget: int | None = None, delay_s: float = 0.0,
          findings=(FINDING,)) -> Watch:
    """A watch of the whole planted range into ``out`` (hardware class "planted", harness "planted")."""
    commits = gitsource.commits_between(repo, "core_v0.0.1", "main")
    store = Store(out, "planted-toolchain", "planted", "planted", runner(repo, out / "cache", delay_s), budget)
    walk = Watch(Source("megatron-core", str(repo), "core_v0.0.1..main", commits), SUITES, every, store,
                 list(findings))
    walk.walk()
    return walk


def report(walk: Watch) -> dict:
    from logitsmatch.explain.watch_report import build

    return build(walk, ["planted"], "planted-toolchain", "planted", 0.0)


if __name__ == "__main__":
    repo_arg, out_arg, every_arg = sys.argv[1:4]
    done = watch(Path(repo_arg), Path(out_arg), int(every_arg),
                 delay_s=float(sys.argv[4]) if len(sys.argv) > 4 else 0.0)
    print(json.dumps({"new_runs": done.store.new_runs}))
