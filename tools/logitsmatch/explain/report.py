"""explain's reports: the terminal summary, Markdown and the combined JSON of one or more suites."""

from __future__ import annotations

import shlex


def combine(reports: dict[str, dict], argv: list[str]) -> dict:
    """One document: per-suite explanations under ``suites`` and the headline fields over all."""
    first_commit = next((r["commit"] for r in reports.values() if r.get("commit")), None)
    first_module = next(({**r["first_module"], "suite": s} for s, r in reports.items() if r.get("first_module")), None)
    culprits: list[str] = []
    for report in reports.values():
        culprits += [name for name in report.get("culprits", []) if name not in culprits]
    return {
        "schema_version": 1,
        "command": shlex.join(["logitsmatch", *argv]),
        "verdicts": {suite: report["verdict"] for suite, report in reports.items()},
        "culprits": culprits,
        "harness_differences": [{**d, "suite": s} for s, r in reports.items() for d in r.get("harness_differences", [])],
        "harness_drift": any(r.get("harness_drift") for r in reports.values()),
        "commit": first_commit,
        "first_module": first_module,
        "runs": [{**run, "suite": s} for s, r in reports.items() for run in r.get("runs", [])],
        "suites": reports,
    }


def _delta(value) -> str:
    return value if isinstance(value, str) else f"{value:.3g}"


def headline(suite: str, report: dict) -> list[str]:
    lines = []
    verdict = report["verdict"]
    if verdict == "no drift":
        vs = report["runs"][1]["result"].get("vs_baseline", {}) if len(report.get("runs", [])) > 1 else {}
        lines.append(f"{suite}: no drift ({report['judgement']}; max |Δ| {_delta(vs.get('max_abs_delta', 0))}); nothing bisected")
        return lines
    if report.get("harness_drift"):
        lines.append(f"{suite}: HARNESS DRIFT: the loaded weights differ and the candidate's packages on the baseline's "
                     "checkpoint give the baseline's result: the drift follows the weights, not the packages")
    for difference in report.get("harness_differences", []):
        lines.append(f"  harness difference: {difference['what']}: {difference['detail']}")
    culprits = report.get("culprits") or []
    tied = report.get("moved_together") or {}
    text = ", ".join(culprits) or "none"
    if tied:
        text += " (moved together with " + "; ".join(f"{name}: {why}" for name, why in tied.items()) + ")"
    changes = {c["name"]: c for c in report.get("differing_packages", [])}
    described = [f"{n} {changes[n]['baseline']} -> {changes[n]['candidate']}" for n in culprits if n in changes]
    lines.append(f"{suite}: culprit package(s): {', '.join(described) or text}"
                 + (f" ({' ; '.join(f'{k} moved with it: {v}' for k, v in tied.items())})" if tied else ""))
    commit = report.get("commit")
    search = report.get("commit_search")
    if commit:
        files = ", ".join(commit["files"][:3]) + (" ..." if len(commit["files"]) > 3 else "")
        lines.append(f"  {commit['package']} {search['good']}..{search['bad']}: first moving commit {commit['sha'][:10]} "
                     f"'{commit['subject']}' ({files or 'no file under the package'})")
    elif search:
        lines.append(f"  commit search: {search.get('problem', 'no commit found')}")
    module = report.get("first_module")
    if module:
        weights = module.get("weights_differing_in_it")
        lines.append(f"  first moving module {module['name']}{' (its input)' if module['output'] == 'in0' else ''} "
                     f"({module['step_kind']}, max |Δ| {_delta(module['max_abs_delta']) if module['max_abs_delta'] is not None else '-'})"
                     + (f"; its own weights differ: {', '.join(weights)}" if weights else ""))
    elif report.get("localization"):
        localization = report["localization"]
        why = localization.get("problem") or localization.get("schedule_problem") or "no module output differs"
        lines.append(f"  module: {why}")
    return lines


def terminal(combined: dict) -> str:
    lines = []
    for suite, report in combined["suites"].items():
        lines += headline(suite, report)
        counts = report.get("counts", {})
        lines.append(f"  {counts.get('suite_runs', 0)} suite runs ({counts.get('reused_runs', 0)} reused) "
                     f"in {report.get('elapsed_s', 0):.0f} s")
    return "\n".join(lines)


def markdown(combined: dict) -> str:
    out = ["# explain", "", f"Command: `{combined['command']}`", ""]
    for suite, report in combined["suites"].items():
        out += [f"## {suite}", "", f"**Verdict: {report['verdict']}.** Judgement: {report['judgement']}.", ""]
        out += ["```", *headline(suite, report), "```", ""]
        out += ["### Environments", "", f"- baseline: `{report['baseline']['python']}`"
                + (f" + {report['baseline']['pythonpath']}" if report['baseline']['pythonpath'] else ""),
                f"- candidate: `{report['candidate']['python']}`"
                + (f" + {report['candidate']['pythonpath']}" if report['candidate']['pythonpath'] else ""), ""]
        changes = report.get("differing_packages", [])
        out += [f"{len(changes)} differing of {len(report['baseline']['environment'])} (baseline) / "
                f"{len(report['candidate']['environment'])} (candidate) installed distributions and the interpreter:", ""]
        out += ["| package | baseline | candidate |", "|---|---|---|"]
        out += [f"| {c['name']} | {c['baseline']} | {c['candidate']} |" for c in changes] or ["| (none) | | |"]
        out += ["", "### Harness inputs", ""]
        differences = report.get("harness_differences", [])
        out += [f"- **{d['what']}**: {d['detail']}" + (f" ({', '.join(d['tensors'][:8])})" if d.get("tensors") else "")
                for d in differences] or ["- none: both runs were fed the same weights, plan, stand-ins and adapter decisions"]
        if "weights_swap" in report:
            out += ["", f"Weights swap (run {report['weights_swap']['run']}): the candidate's packages on the baseline's "
                    f"checkpoint gave **{report['weights_swap']['outcome']}** "
                    f"({'the baseline' if report['weights_swap']['outcome'] == 'good' else 'not the baseline'}'s result)."]
        out += ["", "### Every environment tried", "",
                "| run | environment | moved to the candidate | outcome | tokens / max abs delta vs baseline | vs candidate | wall s |",
                "|---|---|---|---|---|---|---|"]
        for run in report.get("runs", []):
            cells = []
            for side in ("vs_baseline", "vs_candidate"):
                v = run["result"].get(side)
                cells.append("-" if not v else f"{'=' if v['tokens_agree'] else '≠'} / {_delta(v['max_abs_delta'])}")
            out.append(f"| {run['run']} | {run['what']} | {', '.join(run['moved_to_candidate']) or '-'} | {run['outcome']} | "
                       f"{cells[0]} | {cells[1]} | {run['wall_s']}{' (reused)' if run['reused'] else ''} |")
        search = report.get("commit_search")
        if search:
            out += ["", "### Commit search", "", f"{search.get('package')}: {search.get('good')}..{search.get('bad')} in "
                    f"`{search.get('source')}`, {search.get('commits_between')} commits.", ""]
            for tested in search.get("tested", []):
                out.append(f"- {tested['sha'][:10]} {tested['subject']!r}: {tested['outcome']} (run {tested['run']})")
            for skipped in search.get("skipped", []):
                out.append(f"- skipped {skipped['sha'][:10]}: {skipped['why']}")
            for install in search.get("installs", [])[:1]:
                out.append(f"- install: {install.get('how')}; C++ helper: {install.get('cpp_helper', 'n/a')}")
            if search.get("problem"):
                out.append(f"- {search['problem']}")
        localization = report.get("localization")
        if localization and localization.get("modules"):
            moved = [m for m in localization["modules"] if m["ranks_differing"]]
            out += ["", f"### Modules (runs {report.get('localization_runs')}: last good vs first bad)", "",
                    f"{len(moved)} of {len(localization['modules'])} module outputs differ on the real token rows.", ""]
            if localization.get("loaded_weights_differing"):
                out.append(f"Loaded weights differing: {', '.join(localization['loaded_weights_differing'])}.")
                out.append("")
            out += ["| step | module | output | ranks differing | max abs delta (rank 0) |", "|---|---|---|---|---|"]
            for module in moved[:40]:
                step = "prefill" if module["step"] == 0 else f"decode {module['step']}"
                delta = "-" if module["max_abs_delta"] is None else _delta(module["max_abs_delta"])
                ranks = f"{module['ranks_differing']}/{module['ranks_compared']}"
                out.append(f"| {step} | {module['name']} | {module['output']} | {ranks} | {delta} |")
            if len(moved) > 40:
                out.append(f"| ... {len(moved) - 40} more | | | | |")
        counts = report.get("counts", {})
        out += ["", f"{counts.get('suite_runs', 0)} suite runs, {counts.get('reused_runs', 0)} reused, "
                f"{report.get('elapsed_s', 0):.0f} s in all.", ""]
    return "\n".join(out)
