"""What a watch found, as ``watch.json`` and as release notes for numerics (``watch.md``).

The JSON holds the range, its commit count, the changes (each with its files, the suites it moved, how far and
its proof), the unrunnable commits (one line each), the undecided stretches (a change hidden among unrunnable
commits), the quiet stretches, the findings' statuses, every run (reused or not, with its wall time) and the
runs used against the bound. The Markdown says the same in prose, a paragraph per change.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from logitsmatch.explain.watch import Watch
from logitsmatch.explain.watch_store import Job, Tree
from logitsmatch.paths import project_root

PR_NUMBER = re.compile(r"\(#(\d+)\)")


def pr_number(subject: str) -> str | None:
    """The pull request a Megatron-LM subject names, as GitHub's squash merges write it: ``... (#4414)``."""
    found = PR_NUMBER.findall(subject)
    return found[-1] if found else None


def quiet_stretches(watch: Watch) -> list[dict]:
    """The stretches of the range in which no suite moved: between the changes (each change starts a new one),
    within the checkpoints every suite ran at, minus the stretches a change may hide in (undecided)."""
    span = watch.evidence_span()
    if watch.stopped or span is None:
        return []  # the walk did not reach every checkpoint, or no suite ran twice: no stretch is known quiet
    commits = watch.commits
    starts = sorted({span[0], *(c["position"] for c in watch.changes.values() if span[0] < c["position"] <= span[1])})
    hidden = {watch.index[u["after"]] for u in watch.undecided}
    stretches = []
    for start, end in zip(starts, [*starts[1:], span[1] + 1], strict=True):
        last = end - 1
        if last > start and not any(start <= after < last for after in hidden):
            stretches.append({"from": commits[start].sha, "to": commits[last].sha, "commits": last - start})
    return stretches


def runs_used(watch: Watch) -> dict:
    """Per suite (and finding): the runs it took (made by this watch, or taken from the store) and its bound."""
    used = {}
    for key, bound in watch.bounds.items():
        finding = next((f for f in watch.findings if f"finding {f.id}" == key), None)
        keys = {Job(Tree(""), finding.suite, options).suite_key for options in finding.runs} if finding else {key}
        runs = [run for run in watch.store.runs if run["suite"] in keys]
        used[key] = {"runs": len(runs), "ran": sum(not r["reused"] for r in runs),
                     "reused": sum(r["reused"] for r in runs), "bound": bound.to_dict()}
    return used


def source_label(gitdir: str) -> str:
    """How a committed report names the git source: its origin's URL, else its folder's name (a bare clone's
    ``repo`` or ``.git`` folder: the folder above). Never this machine's path: the report travels."""
    import subprocess

    completed = subprocess.run(["git", "-C", gitdir, "config", "--get", "remote.origin.url"],
                               capture_output=True, text=True)
    if completed.returncode == 0 and completed.stdout.strip():
        return completed.stdout.strip()
    folder = Path(gitdir).resolve()
    while folder.name in ("repo", ".git") and folder.parent != folder:
        folder = folder.parent
    return folder.name


def portable_command(command: list[str], gitdir: str, label: str) -> list[str]:
    """The watch's arguments as the report keeps them: the source named by ``label``, paths inside the project
    relative to it (a toolchain's interpreter), other absolute paths by their name."""
    project, portable = project_root(), []
    for given in command:
        argument = given.replace(gitdir, label)
        key, equals, value = argument.rpartition("=") if "=" in argument else ("", "", argument)
        if value.startswith(os.sep):
            try:  # not resolved: a venv folder may be a link out of the project
                value = str(Path(value).relative_to(project))
            except ValueError:
                value = Path(value).name
        portable.append(f"{key}{equals}{value}")
    return portable


def build(watch: Watch, command: list[str], toolchain: str, hardware: str, wall_s: float) -> dict:
    label = source_label(watch.source.gitdir)
    changes = []
    for change in sorted(watch.changes.values(), key=lambda c: c["position"]):
        changes.append({"commit": change["commit"], "subject": change["subject"], "pr": pr_number(change["subject"]),
                        "files": change["files"], "suites": sorted(change["suites"]),
                        "moved": {suite: entry["moved"] for suite, entry in sorted(change["suites"].items())},
                        "proof": {suite: entry["proof"] for suite, entry in sorted(change["suites"].items())}})
    subjects = {c.sha: c.subject for c in watch.commits}
    return {
        "range": watch.source.range, "source": label, "package": watch.source.package,
        "commits": len(watch.commits) - 1, "first": watch.commits[0].sha, "last": watch.commits[-1].sha,
        "every": watch.every, "checkpoints": [watch.commits[i].sha for i in watch.sampled],
        "order": [c.sha for c in watch.commits],
        "suites": watch.suites, "toolchain": toolchain, "hardware_class": hardware, "judgement": "bitwise",
        "changes": changes, "undecided": watch.undecided,
        "unrunnable": [{"commit": sha, "subject": subjects.get(sha, ""), "error": error}
                       for sha, error in sorted(watch.unrunnable.items(), key=lambda item: watch.index[item[0]])],
        "quiet": quiet_stretches(watch),
        "findings": [{**report, "suite_keys": sorted(Job(Tree(""), f.suite, options).suite_key for options in f.runs)}
                     for f in watch.findings if (report := watch.finding_reports.get(f.id))],
        "runs": watch.store.runs, "runs_used": runs_used(watch),
        "new_runs": watch.store.new_runs, "stopped": watch.stopped, "wall_s": round(wall_s, 1),
        "command": portable_command(command, watch.source.gitdir, label),
    }


def _moved(moved: dict) -> str:
    tokens = "tokens changed" if moved["tokens_changed"] else "tokens unchanged"
    return (f"{moved['logprobs']} of {moved['of']} logprobs moved, max |Δ| {moved['max_abs_delta']:.3g} "
            f"({moved['max_ulps']} ulp in {moved['ulp_width']}), {tokens}")


def _proof(suite: str, proof: dict, short) -> str:
    parts = [f"its parent {short(proof['parent'])} gives the earlier numbers ({short(proof['earlier'])}) bit for bit"
             if proof["parent_reproduces_earlier"] else
             f"its parent {short(proof['parent'])} does NOT give the earlier numbers: not proven",
             f"the commit gives the later ones ({short(proof['later'])})" if proof["commit_reproduces_later"]
             else f"the commit's numbers hold until a later change ({proof.get('note', '')})"]
    files = proof["files"]
    if len(files["touched"]) > 1:
        alone = ", ".join(files["alone"])
        parts.append(f"of its {len(files['touched'])} package files, {alone} alone moves it ({files['how']})"
                     if files.get("proven") else f"which of its files moves it is not proven ({files['how']})")
    module = proof["first_module"]
    parts.append(f"first moving module {module['name']} ({module['step_kind']})" if module.get("name")
                 else f"no first moving module ({module.get('problem') or 'the captures agree'})")
    return f"{suite}: " + "; ".join(parts)


def markdown(report: dict) -> str:
    def short(sha: str | None) -> str:
        return sha[:10] if sha else "-"

    lines = [f"# Numerics changes: {report['package']} {report['range']}", "",
             f"{report['commits']} first-parent commits after {short(report['first'])} up to {short(report['last'])} "
             f"in `{report['source']}`, run every {report['every']} commits ({len(report['checkpoints'])} "
             f"checkpoints) on {', '.join(report['suites'])}, toolchain {report['toolchain']}, hardware class "
             f"{report['hardware_class']}; consecutive checkpoints compared bitwise (deterministic mode), each "
             "difference bisected to its first commit.", ""]
    if report["stopped"]:
        lines += [f"**Stopped early**: {report['stopped']}.", ""]
    lines += ["## Changes", ""]
    if not report["changes"]:
        lines += ["No commit of the range moves a suite." if not report["stopped"] else "None found so far.", ""]
    for change in report["changes"]:
        pr = f"PR #{change['pr']}. " if change["pr"] else ""
        moved = "; ".join(f"{suite}: {_moved(m)}" for suite, m in change["moved"].items())
        proofs = " ".join(_proof(suite, p, short) + "." for suite, p in change["proof"].items())
        lines += [f"### {short(change['commit'])} {change['subject']}", "",
                  f"{pr}Files: {', '.join(change['files']) or '(none in the package)'}. Moves {len(change['suites'])} "
                  f"suite(s): {moved}. Proof: {proofs}", ""]
    if report["undecided"]:
        lines += ["## Undecided", ""]
        lines += [f"- {u['suite']}: moves after {short(u['after'])}, at one of the unrunnable commits "
                  f"{', '.join(map(short, u['unrunnable']))}" for u in report["undecided"]] + [""]
    if report["unrunnable"]:
        lines += ["## Unrunnable commits (not evidence)", ""]
        lines += [f"- {short(u['commit'])} '{u['subject']}': {u['error']}" for u in report["unrunnable"]] + [""]
    if report["findings"]:
        lines += ["## Upstream findings", ""]
        for finding in report["findings"]:
            flips = "; ".join(c.get("note") or f"{c['from']} -> {c['now']}" for c in finding["changes"])
            lines.append(f"- {finding['id']}: {finding['at_start']} at the start, {finding['at_end']} at the end"
                         + (f"; {flips}" if flips else "; no change of status"))
        lines.append("")
    lines += ["## Quiet stretches", ""]
    lines += [f"- {short(q['from'])}..{short(q['to'])}: {q['commits']} commits, no suite moved"
              for q in report["quiet"]] or ["- none known (the walk stopped early)" if report["stopped"] else "- none"]
    lines += ["", "## Runs against the bound", "", "| suite | runs | ran | from the store | bound |",
              "|---|---|---|---|---|"]
    for key, used in report["runs_used"].items():
        lines.append(f"| {key} | {used['runs']} | {used['ran']} | {used['reused']} | {used['bound']['runs']} |")
    lines += ["", f"Bound per suite: ⌈c/N⌉ + 1 checkpoints + ⌈log2 N⌉ per change (+ 2·⌈log2 f⌉ for a change of f "
                  f"files, + 1 per unrunnable commit a bisection meets). Wall time {report['wall_s']:.0f} s; "
                  f"{report['new_runs']} runs made by this watch.", ""]
    return "\n".join(lines)
