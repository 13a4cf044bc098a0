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
        "harness_differences": [
            {**d, "suite": s} for s, r in reports.items() for d in r.get("harness_differences", [])
        ],
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
        lines.append(
            f"{suite}: no drift ({report['judgement']}; max |Δ| {_delta(vs.get('max_abs_delta', 0))}); nothing bisected"
        )
        return lines
    if report.get("harness_drift"):
        lines.append(
            f"{suite}: HARNESS DRIFT: the loaded weights differ and the candidate's packages on the baseline's "
            "checkpoint give the baseline's result: the drift follows the weights, not the packages"
        )
    for difference in report.get("harness_differences", []):
        lines.append(f"  harness difference: {difference['what']}: {difference['detail']}"
                     + (f" ({difference['check']})" if difference.get("check") else ""))
    lines += culprit_lines(suite, report)
    commit = report.get("commit")
    search = report.get("commit_search")
    if commit:
        files = ", ".join(commit["files"][:3]) + (" ..." if len(commit["files"]) > 3 else "")
        lines.append(
            f"  {commit['package']} {search['good']}..{search['bad']}: first moving commit {commit['sha'][:10]} "
            f"'{commit['subject']}' ({files or 'no file under the package'})"
        )
    elif search:
        lines.append(f"  commit search: {search.get('problem', 'no commit found')}")
    if search and search.get("start_unrunnable"):
        lines.append(f"  commit search: {search['start_unrunnable']['note']}")
    module = report.get("first_module")
    if module:
        weights = module.get("weights_differing_in_it")
        lines.append(
            f"  first moving module {module['name']}{' (its input)' if module['output'] == 'in0' else ''} "
            f"({module['step_kind']}, max |Δ| "
            f"{_delta(module['max_abs_delta']) if module['max_abs_delta'] is not None else '-'})"
            + (f"; its own weights differ: {', '.join(weights)}" if weights else "")
            + (f"; aligned row by row by prefix ({module['rows']})" if module.get("aligned_by") == "prefixes" else "")
        )
    elif report.get("localization"):
        localization = report["localization"]
        why = localization.get("problem") or localization.get("schedule_problem") or "no module output differs"
        lines.append(f"  module: {why}" + (" (aligned row by row by prefix)"
                                           if localization.get("aligned_by") == "prefixes" else ""))
    steps_problem = (report.get("localization") or {}).get("steps_problem")
    if steps_problem and (report.get("localization") or {}).get("aligned_by") == "prefixes":
        lines.append(f"  module: not aligned step by step: {steps_problem}")
    return lines


def _members(group: dict) -> str:
    """A group's other members, those sharing a prefix folded: ``triton, nvidia-* (15)``."""
    others = [name for name in group["members"] if name != group["lead"]]
    prefixes: dict[str, list[str]] = {}
    for name in others:
        prefixes.setdefault(name.split("-", 1)[0], []).append(name)
    return ", ".join(f"{prefix}-* ({len(names)})" if len(names) > 2 else ", ".join(names)
                     for prefix, names in prefixes.items())


def group_text(group: dict, changes: dict) -> str:
    """``torch 2.13.0 -> 2.9.1 (with its 16 requirements: triton, nvidia-* (15))``."""
    change = changes.get(group["lead"], {})
    text = f"{group['lead']} {change.get('baseline') or '(absent)'} -> {change.get('candidate') or '(absent)'}"
    count = len(group["members"]) - 1
    return text + (f" (with its {count} requirement{'s' if count != 1 else ''}: {_members(group)})" if count else "")


def _proof_text(step: dict, claim: str) -> str:
    if step.get("impossible"):
        return f"{claim.replace(' moved without ', ' cannot move without ')}: {step['impossible']}"
    said = {"bad": "reproduces the candidate", "good": "reproduces the baseline",
            "other": "gives neither side's result", "unresolved": "could not start"}
    said = said.get(step.get("outcome") or "", "was not run")
    where = f" (run {step['run']})" if step.get("run") else ""
    return f"{claim} {said}{where}"


def culprit_lines(suite: str, report: dict) -> list[str]:
    """The culprit group(s) with the two runs that prove them, the groups and ties, what could not start,
    and where the search went beyond its bound."""
    changes = {c["name"]: c for c in report.get("differing_packages", [])}
    groups = report.get("culprit_groups") or []
    proof = report.get("proof") or {}
    several = len(groups) > 1
    named = "; ".join(group_text(group, changes) for group in groups) or "none"
    lines = [f"{suite}: culprit{' groups' if several else ''}: {named}: "
             + _proof_text(proof.get("alone", {}), "moving them alone" if several else "moving it alone") + "; "
             + _proof_text(proof.get("without", {}), "everything else moved without " + ("them" if several else "it"))
             + ("" if proof.get("proven", True) else " (not proven)")]
    for name, why in (report.get("moved_together") or {}).items():
        lines.append(f"  {name} moved with it: {why}")
    within = report.get("within_group")
    if within and groups:
        lead = groups[0]["lead"]
        said = {"good": f"{lead} itself is needed: its requirements moved without it reproduce the baseline",
                "bad": f"its requirements moved without {lead} reproduce the candidate: the drift is theirs",
                "other": f"its requirements moved without {lead} give neither side's result"}
        said = said.get(within.get("outcome") or "")
        where = f" (run {within['run']})" if within.get("run") else ""
        lines.append(f"  {said}{where}" if said else f"  its requirements without {lead}: {within.get('why')}{where}")
    for group in report.get("groups") or []:
        if len(group["members"]) > 1:
            reasons = list(group["reasons"].values())
            lines.append(f"  group {group_text(group, changes)}: {reasons[0]}"
                         + (f" (and {len(reasons) - 1} more, see the report)" if len(reasons) > 1 else ""))
    for unresolved in report.get("unresolved") or []:
        where = f"run {unresolved['run']}" if unresolved.get("run") else "not run"
        lines.append(f"  unresolved ({where}): {unresolved['what']}: {unresolved['error']}")
    lines += [f"  {note}" for note in report.get("notes") or []]
    bound = report.get("bound") or {}
    for note in bound.get("notes") or []:
        lines.append(f"  bound {note}")
    return lines


def terminal(combined: dict) -> str:
    lines = []
    for suite, report in combined["suites"].items():
        lines += headline(suite, report)
        counts = report.get("counts", {})
        bound = (report.get("bound") or {}).get("runs")
        lines.append(f"  {counts.get('suite_runs', 0)} suite runs ({counts.get('reused_runs', 0)} reused"
                     + (f"; the bound was {bound}" if bound else "") + f") in {report.get('elapsed_s', 0):.0f} s")
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
        out += [
            f"{len(changes)} differing of {len(report['baseline']['environment'])} (baseline) / "
            f"{len(report['candidate']['environment'])} (candidate) installed distributions and the interpreter:",
            "",
        ]
        out += ["| package | baseline | candidate |", "|---|---|---|"]
        out += [f"| {c['name']} | {c['baseline']} | {c['candidate']} |" for c in changes] or ["| (none) | | |"]
        groups = report.get("groups") or []
        if groups:
            out += ["", f"### Groups ({len(groups)}): what moves as one in the search", ""]
            for group in groups:
                out.append(f"- **{group_text(group, {c['name']: c for c in changes})}**")
                out += [f"  - {member}: {why}" for member, why in group["reasons"].items()]
            for name, why in (report.get("ties") or {}).items():
                out.append(f"- tie: {name} moves along where needed: {why}")
        if report.get("unresolved"):
            out += ["", "### Configurations that could not start (no evidence for either side)", ""]
            out += [f"- run {u['run'] or '-'}: {u['what']}: `{u['error']}`" for u in report["unresolved"]]
        out += ["", "### Harness inputs", ""]
        differences = report.get("harness_differences", [])
        out += [
            f"- **{d['what']}**: {d['detail']}"
            + (f" ({', '.join(d['tensors'][:8])})" if d.get("tensors") else "")
            + (f". Checked: {d['check']}" if d.get("check") else "")
            for d in differences
        ] or ["- none: both runs were fed the same weights, plan, stand-ins and adapter decisions"]
        if "weights_swap" in report:
            out += [
                "",
                f"Weights swap (run {report['weights_swap']['run']}): the candidate's packages on the baseline's "
                f"checkpoint gave **{report['weights_swap']['outcome']}** "
                f"({'the baseline' if report['weights_swap']['outcome'] == 'good' else 'not the baseline'}'s result).",
            ]
        out += [
            "",
            "### Every environment tried",
            "",
            "| run | environment | moved to the candidate | outcome | tokens / max abs delta vs baseline | vs "
            "candidate | wall s |",
            "|---|---|---|---|---|---|---|",
        ]
        for run in report.get("runs", []):
            cells = []
            for side in ("vs_baseline", "vs_candidate"):
                v = run["result"].get(side)
                cells.append("-" if not v else f"{'=' if v['tokens_agree'] else '≠'} / {_delta(v['max_abs_delta'])}")
            out.append(
                f"| {run['run']} | {run['what']} | {', '.join(run['moved_to_candidate']) or '-'} | {run['outcome']} | "
                f"{cells[0]} | {cells[1]} | {run['wall_s']}{' (reused)' if run['reused'] else ''} |"
            )
        search = report.get("commit_search")
        if search:
            out += [
                "",
                "### Commit search",
                "",
                f"{search.get('package')}: {search.get('good')}..{search.get('bad')} in "
                f"`{search.get('source')}`, {search.get('commits_between')} commits.",
                "",
            ]
            for tested in search.get("tested", []):
                out.append(f"- {tested['sha'][:10]} {tested['subject']!r}: {tested['outcome']} (run {tested['run']})")
            for skipped in search.get("skipped", []):
                out.append(f"- skipped {skipped['sha'][:10]}: {skipped['why']}")
            for install in search.get("installs", [])[:1]:
                out.append(f"- install: {install.get('how')}; C++ helper: {install.get('cpp_helper', 'n/a')}")
            if search.get("start_unrunnable"):
                out.append(f"- {search['start_unrunnable']['note']}")
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
