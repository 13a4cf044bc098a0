"""Whether an upstream finding still holds at a release or a commit: the flow behind `logitsmatch upstream-check`.

The finding's two runs (``explain.upstream``) in the toolchain's venv as it is (a release), or with a commit of a
git source installed over it (``--source`` and ``--ref``, as explain and watch install one); then its status.
Exit codes: 0 the finding is absent (fixed), 1 it holds, 2 bad input, 3 a run of the check failed (no evidence).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from logitsmatch import paths
from logitsmatch.errors import EXIT_DRIFT, EXIT_OK, EXIT_RUN_FAILED, BadInput
from logitsmatch.files import check_interpreter, output_folder, write_atomic


def upstream_check(args) -> int:
    from logitsmatch.explain import gitsource, upstream
    from logitsmatch.explain.commit_search import megatron_cpp_helper
    from logitsmatch.explain.environments import Side, resolve
    from logitsmatch.explain.suite_runs import published_run
    from logitsmatch.flows.watch import toolchain_python
    from logitsmatch.judge.golden_io import load_golden

    project = paths.project_root()
    finding = upstream.find(upstream.load_register(project), args.finding)
    toolchain, python = toolchain_python(project, args.toolchain, args.python)
    check_interpreter(python, "--python")
    side, at = Side("release", python), f"toolchain {toolchain} (its release)"
    if args.source or args.ref:
        package, equals, gitdir = (args.source or "").partition("=")
        if not equals or package != "megatron-core" or not args.ref:
            raise BadInput("a commit is checked with --source megatron-core=GITDIR and --ref REF together")
        sha = gitsource.rev(gitdir, args.ref)
        folder, _ = gitsource.install_commit(package, gitdir, sha, paths.cache_root() / "explain", python,
                                             megatron_cpp_helper(resolve(side)))
        side = Side(sha[:10], python, (str(folder),))
        at = f"megatron-core {sha[:10]} ({args.ref}) over toolchain {toolchain}"
    work = output_folder(args.workdir or paths.results_root() / "upstream" / finding.id)
    documents = {}
    for number, options in enumerate(finding.runs):
        started = time.monotonic()
        result, error = published_run(project, side, finding.suite, toolchain,
                                      f"upstream-{finding.id}-{side.name}-{number}", work, options)
        print(f"  {finding.suite} {' '.join(options) or '(as the suite runs)'}: {error or 'done'} "
              f"in {time.monotonic() - started:.0f} s")
        documents[options] = load_golden(result) if result else None
    status, evidence = upstream.finding_status(finding, lambda suite, options: documents[options])
    print(f"{finding.id} at {at}: {status.upper()} ({json.dumps(evidence)[:400]})")
    if args.json:
        write_atomic(Path(args.json), json.dumps({"finding": finding.id, "at": at, "status": status,
                                                  "evidence": evidence}, indent=1) + "\n")
    return {upstream.HOLDS: EXIT_DRIFT, upstream.ABSENT: EXIT_OK}.get(status, EXIT_RUN_FAILED)
