"""A hostile campaign against what the harness writes and reads, as a user's CI would hit it (no inference).

    PYTHONPATH=tools python scripts/hostile_campaign.py [--seed N] [--metadata N] [--signals N] [--concurrent N]

Categories: typed-schema fuzzing of every metadata file (sidecars, manifests), output targets (devices, pipes,
links to standard output, names at and over the file system's limit), signals at random points of writes
(compare's reports, record, collect; SIGINT, SIGTERM, SIGKILL), concurrent writers (collect of one key and of
two keys, two records of one golden), a full tmpfs and read-only bind mounts (these two need root). Every case
is its own process. Afterwards: every golden and sidecar pair is one record (`logitsmatch verify`), no temp file
is left, and the totals count hangs, tracebacks and exit 70s, which must all be zero.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(PROJECT / "tools"), str(PROJECT / "tests")]

from support import DEFAULT_TOOLCHAIN, TINY_SUITE  # noqa: E402
from support.fuzz import GOLDEN, metadata_cases, run_cases  # noqa: E402

ENV = {**os.environ, "PYTHONPATH": str(PROJECT / "tools")}
HANG_S = 60


class Totals:
    """Per category: cases, exit codes, and what must never happen."""

    def __init__(self):
        self.codes: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        self.problems: list[str] = []

    def add(self, category: str, name: str, code: int | None, stderr: str, allowed: set[int], extra=()) -> None:
        self.codes[category][code] += 1
        problems = list(extra)
        if code is None:
            problems.append("hang")
        elif code not in allowed:
            problems.append(f"exit {code}, expected {sorted(allowed)}")
        if "Traceback" in stderr:
            problems.append("traceback")
        if problems:
            self.problems.append(f"{category}: {name}: {'; '.join(problems)} | {stderr[-200:]!r}")

    def report(self) -> int:
        everything = collections.Counter()
        print(f"{'category':<22}{'cases':>7}  exit codes")
        for category, codes in self.codes.items():
            everything.update(codes)
            shown = ", ".join(f"{code}: {count}" for code, count in sorted(codes.items(), key=lambda kv: str(kv[0])))
            print(f"{category:<22}{sum(codes.values()):>7}  {shown}")
        print(f"{'total':<22}{sum(everything.values()):>7}  hangs {everything[None]}, exit 70: {everything[70]}, "
              f"problems {len(self.problems)}")
        for problem in self.problems:
            print("  PROBLEM", problem)
        return 1 if self.problems else 0


def logitsmatch(*args, env=None, stdout=subprocess.PIPE, timeout=HANG_S) -> tuple[int | None, str, str]:
    try:
        done = subprocess.run([sys.executable, "-m", "logitsmatch", *map(str, args)], cwd=PROJECT,
                              env={**ENV, **(env or {})}, stdout=stdout, stderr=subprocess.PIPE, text=True,
                              timeout=timeout)
        return done.returncode, done.stdout or "", done.stderr
    except subprocess.TimeoutExpired:
        return None, "", ""


def start(*args, env=None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "logitsmatch", *map(str, args)], cwd=PROJECT,
                            env={**ENV, **(env or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen) -> tuple[int | None, str]:
    try:
        _, stderr = process.communicate(timeout=HANG_S)
        return process.returncode, stderr
    except subprocess.TimeoutExpired:
        process.kill()
        return None, ""


def temp_files(folder: Path) -> list[str]:
    return [str(path) for path in folder.rglob(".*") if path.is_file() and path.name != ".logitsmatch.lock"]


def machine(root: Path, nudge: float = 0.0, cpu_model: str | None = None) -> Path:
    """A results/ tree holding the committed tiny golden as its result (optionally moved, or of another CPU)."""
    from logitsmatch import hardware

    folder = root / "results" / TINY_SUITE / "cpu" / DEFAULT_TOOLCHAIN
    folder.mkdir(parents=True)
    document = json.loads(GOLDEN.read_text())
    document[next(iter(document))]["logprobs"][3] += nudge
    (folder / "result.json").write_text(json.dumps(document))
    provenance = json.loads(GOLDEN.with_name(GOLDEN.stem + ".provenance.json").read_text())
    if cpu_model:
        identity = {"cpu": {**provenance["hardware"]["cpu"], "vendor": "GenuineIntel", "model": cpu_model,
                            "isa": "AVX512"}}
        provenance["hardware"] = {**identity, "class": hardware.hardware_class(identity)}
    (folder / "result.provenance.json").write_text(json.dumps(provenance))
    return root


def scratch_project(root: Path) -> dict[str, str]:
    root.mkdir(parents=True)
    shutil.copy(PROJECT / "pyproject.toml", root)
    for folder in ("suites", "model_configs"):
        shutil.copytree(PROJECT / folder, root / folder)
    shutil.copytree(PROJECT / "golden_values" / TINY_SUITE, root / "golden_values" / TINY_SUITE)
    return {"LOGITSMATCH_ROOT": str(root), "LOGITSMATCH_RESULTS": str(root / "results")}


def big_pair(folder: Path) -> tuple[Path, Path]:
    rng = random.Random(7)
    golden = {str(i): {"generated_tokens": list(range(30)), "logprobs": [-rng.random() for _ in range(3000)]}
              for i in range(60)}
    current = {key: {**value, "logprobs": [x + 2e-4 for x in value["logprobs"]]} for key, value in golden.items()}
    paths = folder / "big-golden.json", folder / "big-current.json"
    for path, document in zip(paths, (golden, current), strict=True):
        path.write_text(json.dumps(document))
    return paths


def metadata(totals: Totals, work: Path, seed: int, count: int) -> None:
    cases = metadata_cases(work / "metadata", seed, count)
    for outcome in run_cases(cases, work / "metadata", seed):
        totals.add("metadata schema", outcome.case.name, outcome.code, outcome.stderr, {2}, outcome.problems)


def outputs(totals: Totals, work: Path) -> None:
    folder = work / "outputs"
    folder.mkdir()
    limit = os.pathconf(folder, "PC_NAME_MAX")
    link = folder / "fd1"
    link.symlink_to("/proc/self/fd/1")
    for target, allowed in (("/dev/null", {0}), ("/dev/stdout", {0}), (link, {0}), (folder / ("a" * limit), {0}),
                            (folder / ("b" * (limit + 1)), {2}), (folder / ("c" * 300), {2}),
                            (folder / "missing" / "r.json", {2}), (folder, {2})):
        code, _, stderr = logitsmatch("compare", GOLDEN, GOLDEN, "--json", target, "-q")
        extra = [] if os.path.islink(link) else ["the link was replaced"]
        totals.add("output targets", str(target)[-60:], code, stderr, allowed, extra)
    fifo = folder / "fifo"
    os.mkfifo(fifo)
    reader = subprocess.Popen(["cat", str(fifo)], stdout=subprocess.PIPE, text=True)
    code, _, stderr = logitsmatch("compare", GOLDEN, GOLDEN, "--json", fifo, "-q")
    read = reader.communicate(timeout=HANG_S)[0]
    totals.add("output targets", "a FIFO", code, stderr, {0}, [] if '"verdict"' in read else ["nothing read"])
    extra = temp_files(folder)
    totals.add("output targets", "no temp file left", 0, "", {0}, [f"temp files {extra}"] if extra else [])


def signals(totals: Totals, work: Path, rng: random.Random, count: int) -> None:
    folder = work / "signals"
    folder.mkdir()
    golden, current = big_pair(folder)
    out = folder / "out"
    out.mkdir()
    for trial in range(count):
        sig = (signal.SIGINT, signal.SIGTERM)[trial % 2]
        report = out / f"r{trial}.json"
        process = start("compare", golden, current, "--mode", "deterministic", "--json", report,
                        "--deepdiff", out / f"d{trial}.json")
        time.sleep(rng.uniform(0.05, 3.0))
        process.send_signal(sig)
        code, stderr = finish(process)
        extra = [f"temp files {temp_files(out)}"] if temp_files(out) else []
        if report.exists():
            try:
                json.loads(report.read_text())
            except ValueError:
                extra.append("half a report")
        totals.add("signals: compare", f"{sig.name} trial {trial}", code, stderr, {0, 1, 130}, extra)
    # record --force from a collection, killed at a random point: the pair is one record after
    env = scratch_project(folder / "project")
    into = folder / "into"
    logitsmatch("collect", machine(folder / "machine", nudge=2e-6), "--into", into, env=env)
    goldens = folder / "project" / "golden_values" / TINY_SUITE
    for trial in range(count):
        sig = (signal.SIGTERM, signal.SIGKILL, signal.SIGINT)[trial % 3]
        process = start("record", TINY_SUITE, "--toolchain", DEFAULT_TOOLCHAIN, "--from", into, "--force", env=env)
        time.sleep(rng.uniform(0.05, 1.5))
        process.send_signal(sig)
        code, stderr = finish(process)
        verified, out_text, verify_err = logitsmatch("verify", goldens)
        extra = [] if verified == 0 else [f"verify: {out_text[-300:]} {verify_err[-200:]}"]
        extra += [f"temp files {temp_files(goldens)}"] if temp_files(goldens) else []
        allowed = {0, 130, -signal.SIGKILL} if sig == signal.SIGKILL else {0, 130}
        totals.add("signals: record", f"{sig.name} trial {trial}", code, stderr, allowed, extra)


def concurrent(totals: Totals, work: Path, count: int) -> None:
    folder = work / "concurrent"
    one, other = machine(folder / "one"), machine(folder / "two", nudge=1e-6)
    intel = machine(folder / "intel", cpu_model="Intel(R) Xeon(R) Platinum 8480+")
    for trial in range(count):
        into = folder / f"same-{trial}"
        codes = sorted(finish(p)[0] for p in [start("collect", one, "--into", into), start("collect", other,
                                                                                          "--into", into)])
        entries = json.loads((into / "collected.json").read_text()) if (into / "collected.json").is_file() else {}
        extra = [] if len(entries) == 1 else [f"{len(entries)} manifest entries"]
        totals.add("concurrent: collect 1 key", f"trial {trial}", 0 if codes == [0, 2] else codes[-1], "",
                   {0}, extra + ([] if codes == [0, 2] else [f"codes {codes}"]))
        into = folder / f"two-{trial}"
        codes = sorted(finish(p)[0] for p in [start("collect", one, "--into", into), start("collect", intel,
                                                                                          "--into", into)])
        entries = json.loads((into / "collected.json").read_text())
        totals.add("concurrent: collect 2 keys", f"trial {trial}", codes[-1], "", {0},
                   [] if len(entries) == 2 else [f"{len(entries)} manifest entries"])
    env = scratch_project(folder / "project")
    into = folder / "for-record"
    logitsmatch("collect", machine(folder / "moved", nudge=2e-6), "--into", into, env=env)
    goldens = folder / "project" / "golden_values" / TINY_SUITE
    for trial in range(count):
        processes = [start("record", TINY_SUITE, "--toolchain", DEFAULT_TOOLCHAIN, "--from", into, "--force", env=env)
                     for _ in range(2)]
        results = [finish(process) for process in processes]
        verified, out_text, _ = logitsmatch("verify", goldens)
        extra = [] if verified == 0 else [f"verify: {out_text[-300:]}"]
        for code, stderr in results:
            if code == 2 and "is being written by pid" not in stderr:
                extra.append(f"a refused record does not name the other: {stderr[-200:]!r}")
        totals.add("concurrent: record", f"trial {trial}", max(code for code, _ in results), "", {0, 2}, extra)


def mounted(totals: Totals, work: Path) -> None:
    if os.geteuid() != 0:
        print("full tmpfs and read-only mounts: skipped (they need root)")
        return
    folder = work / "mounts"
    small, readonly, source = folder / "small", folder / "readonly", folder / "source"
    for path in (small, readonly, source):
        path.mkdir(parents=True)
    golden, current = big_pair(folder)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(small)], check=True)
    env = scratch_project(folder / "project")
    into = folder / "into"
    logitsmatch("collect", machine(folder / "machine", nudge=2e-6), "--into", into, env=env)
    shutil.copytree(into, source / "into")
    subprocess.run(["mount", "--bind", str(source), str(readonly)], check=True)
    subprocess.run(["mount", "-o", "remount,ro,bind", str(readonly)], check=True)
    try:
        for trial in range(3):
            code, _, stderr = logitsmatch("compare", golden, current, "--mode", "deterministic", "--json",
                                          small / f"r{trial}.json")
            extra = [f"temp files {temp_files(small)}"] if temp_files(small) else []
            totals.add("full tmpfs", f"compare --json, trial {trial}", code, stderr, {2}, extra)
            code, _, stderr = logitsmatch("collect", machine(folder / f"m{trial}"), "--into", small / f"c{trial}")
            totals.add("full tmpfs", f"collect, trial {trial}", code, stderr, {0, 2},
                       [f"temp files {temp_files(small)}"] if temp_files(small) else [])
            shutil.rmtree(small / f"c{trial}", ignore_errors=True)
        for trial in range(3):
            code, _, stderr = logitsmatch("compare", GOLDEN, GOLDEN, "--json", readonly / f"r{trial}.json")
            totals.add("read-only mount", f"compare --json, trial {trial}", code, stderr, {2})
            code, _, stderr = logitsmatch("collect", machine(folder / f"r{trial}"), "--into", readonly / "into")
            totals.add("read-only mount", f"collect --into, trial {trial}", code, stderr, {2})
            code, _, stderr = logitsmatch("record", TINY_SUITE, "--toolchain", DEFAULT_TOOLCHAIN, "--from",
                                          readonly / "into", "--force", env=env)
            totals.add("read-only mount", f"record --from, trial {trial}", code, stderr, {0})
    finally:
        subprocess.run(["umount", str(readonly)], check=False)
        subprocess.run(["umount", str(small)], check=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=30)
    parser.add_argument("--metadata", type=int, default=80, help="typed-schema cases (4 fixed ones are added)")
    parser.add_argument("--signals", type=int, default=18, help="trials per signalled command (compare, record)")
    parser.add_argument("--concurrent", type=int, default=8, help="trials per concurrent pair")
    args = parser.parse_args()
    totals, rng = Totals(), random.Random(args.seed)
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        metadata(totals, work, args.seed, args.metadata)
        outputs(totals, work)
        signals(totals, work, rng, args.signals)
        concurrent(totals, work, args.concurrent)
        mounted(totals, work)
    print(f"seed {args.seed}; {time.monotonic() - started:.0f} s")
    return totals.report()


if __name__ == "__main__":
    sys.exit(main())
