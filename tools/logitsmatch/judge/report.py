"""Render a ComparisonResult for people and for CI: terminal, Markdown, JUnit XML and JSON.

Terminal and Markdown show the verdict first and the largest drifts first,
truncated to `limit` rows so a diff of a million values stays readable, then the
few largest logprobs that moved within tolerance (a pass that moved values names
them); the JSON report lists every moved value and is streamed request by
request, so a huge one never exists twice in memory. Figures are written as
judge.figures says, one precision per kind of figure.
"""

from __future__ import annotations

import os
import re

from logitsmatch.judge.divergence import describe
from logitsmatch.judge.figures import exact, plural, short_number, signed_number, ulps_text
from logitsmatch.judge.golden_io import atomic_writer, dumps_json
from logitsmatch.judge.numerics import prompt_change_words
from logitsmatch.judge.results import Check, ComparisonResult, DriftTable, deepdiff_path
from logitsmatch.judge.top_n import describe as describe_top_n

DEFAULT_LIMIT = 20
MOVES_SHOWN = 5  # the largest moves within tolerance a terminal or Markdown report names (the JSON has all)
# What a terminal, Markdown or XML cannot carry: lone surrogates (JSON can, UTF-8 cannot) and,
# for XML, the control characters it forbids. Shown as U+FFFD; the JSON report keeps them escaped.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def printable(text: str) -> str:
    """Terminal text: control characters and lone surrogates escaped (log.visible)."""
    from logitsmatch.log import visible

    return visible(text)


def _xml(text: str) -> str:
    return _NOT_XML.sub("\ufffd", text)


def verdict_line(result: ComparisonResult) -> str:
    """One line: the verdict, why, and the policy it was judged under."""
    summary = result.summary()
    logprobs = summary["logprobs"]
    parts = [f"{len(result.failed_checks)} of {plural(len(result.checks), 'check')} failed"]
    lost = [str(change["request"]) for change in result.structural_changes if change["kind"] == "missing_request"]
    if lost:  # named even under -q: a lost request is the first thing to know
        shown = ", ".join(lost[:5]) + (f" and {len(lost) - 5} more" if len(lost) > 5 else "")
        parts.append(f"{plural(len(lost), 'golden request')} lost ({shown})")
    retokenised = sum(bool(r.prompt_change and r.prompt_change.get("same_text")) for r in result.requests.values())
    split = sum(bool(r.prompt_change and r.prompt_change.get("extra_logprobs")) for r in result.requests.values())
    prompts = summary["requests_with_prompt_change"] - retokenised - split
    if split:
        parts.append(f"one side keeps logprobs past its prompt and generated tokens in {split} of "
                     f"{plural(summary['requests_compared'], 'request')}")
    if prompts:
        parts.append(f"prompt differs in {prompts} of {plural(summary['requests_compared'], 'request')}")
    if retokenised:
        parts.append(f"the same prompt text is tokenised differently in {retokenised} of "
                     f"{plural(summary['requests_compared'], 'request')} (different tokenizers)")
    diverged = summary["requests_with_token_divergence"]
    if diverged:
        parts.append(f"tokens diverge in {diverged} of {plural(summary['requests_compared'], 'request')}")
    parts.append(moved_text(result))
    if logprobs["not_comparable"]:
        parts.append(f"{logprobs['not_comparable']} not comparable")
    if result.structural_changes:
        parts.append(plural(len(result.structural_changes), "structural change"))
    return f"{result.verdict.upper()}: " + "; ".join(parts) + f" [{_policy_text(result)}]"


def moved_text(result: ComparisonResult) -> str:
    """What moved bitwise and what crossed the tolerance, e.g. "36 of 158 logprobs moved (max 4.8e-7,
    1 ulp), none over tolerance"."""
    over = result.n_over_tolerance
    text = f"{result.n_moved} of {plural(result.n_compared, 'logprob')} moved"
    if result.n_moved:
        text += f" (max {short_number(result.max_abs_delta)}, {ulps_text(result.max_ulps, result.ulp_width)})"
    return text + (f", {over} over tolerance" if over else ", none over tolerance")


def _metrics_line(result: ComparisonResult) -> str:
    """Which metric set judged the pair: "Metrics checked: generated_tokens, logprobs, routing_indices (suite ...'s
    METRICS, recognised from the provenance sidecar)"."""
    return f"Metrics checked: {', '.join(result.policy.metrics)} ({result.metrics_origin})"


def _policy_text(result: ComparisonResult) -> str:
    p = result.policy
    budget = "auto" if p.failure_budget is None else p.failure_budget
    nan = "NaN==NaN" if p.nan_equal else "NaN!=NaN"
    return (f"mode {p.mode.value}, abs_tol {p.abs_tol:g}, rel_tol {p.rel_tol:g}, budget {budget}, {nan}, "
            f"metrics {','.join(p.metrics) or 'none'}")


def _where(check: Check) -> str:
    return "run" if check.request is None else f"request {check.request}"


def _more(total: int, shown: int) -> list[str]:
    return [f"... and {total - shown} more"] if total > shown else []


def _drift_rows(result: ComparisonResult, table: DriftTable, limit: int) -> list[tuple[str, ...]]:
    """The ``limit`` largest |delta| of ``table`` (the drift or the moves), largest first."""
    rows = []
    for row in table.largest(limit).tolist():
        golden, current = float(table.golden[row]), float(table.current[row])
        rows.append((
            deepdiff_path(result.request_order[table.request[row]], "logprobs", int(table.index[row])),
            "generated" if table.generated[row] else "prompt",
            exact(golden),
            exact(current),
            signed_number(current - golden),
            str(int(table.ulps[row])),
        ))
    return rows


def _request_rows(result: ComparisonResult, limit: int) -> list[tuple[str, ...]]:
    ranked = sorted(result.requests.values(), key=lambda r: (-r.max_abs_delta, -r.n_over))[:limit]
    return [
        (r.request_id, "pass" if r.passed else "FAIL", str(r.n_compared), str(r.n_moved), str(r.n_over),
         str(r.n_not_comparable), "-" if r.first_divergence is None else str(r.first_divergence),
         short_number(r.max_abs_delta), str(r.max_ulps), short_number(r.mean_abs_delta),
         short_number(r.p99_abs_delta))
        for r in ranked
    ]


def _divergence_lines(result: ComparisonResult, limit: int) -> list[str]:
    """Per request: a changed prompt, or the first diverging token and the text around it."""
    diverged = [r for r in result.requests.values() if r.first_divergence is not None or r.prompt_change]
    lines = []
    for r in diverged[:limit]:
        if r.prompt_change:
            lines.append(f"{deepdiff_path(r.request_id, 'input_prompt')}: {prompt_change_words(r.prompt_change)}; "
                         f"the outputs of request {r.request_id} are not compared")
            continue
        first = next(c for c in r.token_changes if c["index"] == r.first_divergence)
        path = deepdiff_path(r.request_id, "generated_tokens", r.first_divergence)
        lines.append(f"{path}: first divergence of request {r.request_id} (golden {first['golden']}, "
                     f"current {first['current']}); {plural(len(r.token_changes), 'token')} changed")
        if r.divergence_text:
            lines.append("  " + describe(r.divergence_text))
        if r.top_n:
            lines.append("  " + describe_top_n(r.top_n))
    return lines + _more(len(diverged), min(len(diverged), limit))


def _structural_text(change: dict) -> str:
    return f"{change['kind']} {change['path']}: {change['golden'] or 'absent'} -> {change['current'] or 'absent'}"


def _drift_header(result: ComparisonResult) -> tuple[str, ...]:
    return ("path", "part", "golden", "current", "delta", f"ulps ({result.ulp_width})")


def _moves_title(result: ComparisonResult) -> str:
    shown = min(MOVES_SHOWN, len(result.moves))
    return f"Largest logprob moves within tolerance (top {shown} of {len(result.moves)})"


def _moves_rows(result: ComparisonResult) -> list[tuple[str, ...]]:
    return _drift_rows(result, result.moves, MOVES_SHOWN)


_REQUEST_HEADER = ("request", "verdict", "compared", "moved", "over", "not comparable", "first divergence",
                   "max |delta|", "max ulps", "mean |delta|", "p99 |delta|")


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    return ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in (header, *rows)]


def render_terminal(result: ComparisonResult, limit: int = DEFAULT_LIMIT) -> str:
    """Human summary for a terminal: verdict line first, then the largest findings first (only the
    verdict line under -q)."""
    from logitsmatch import log

    lines = [verdict_line(result)]
    if log.quiet():
        return printable(lines[0]) + "\n"
    if result.metrics_origin:
        lines.append(_metrics_line(result))

    def section(title: str, body: list[str]) -> None:
        if body:
            lines.extend(["", title, *("  " + b for b in body)])

    failed = result.failed_checks
    section(f"Failed checks ({len(failed)}):",
            [f"{_where(c)} {c.metric}: {c.message}" for c in failed[:limit]] + _more(len(failed), limit))
    section("Warnings:", result.warnings)
    changes = result.structural_changes
    section(f"Structural changes ({len(changes)}):",
            [_structural_text(c) for c in changes[:limit]] + _more(len(changes), limit))
    section("Token divergences and changed prompts:", _divergence_lines(result, limit))
    if len(result.drift):
        shown = min(limit, len(result.drift))
        section(f"Largest logprob drifts (top {shown} of {len(result.drift)}):",
                _table(_drift_header(result), _drift_rows(result, result.drift, limit))
                + _more(len(result.drift), shown))
    if len(result.moves):
        section(_moves_title(result) + ":", _table(_drift_header(result), _moves_rows(result))
                + _more(len(result.moves), MOVES_SHOWN))
    if result.requests:
        shown = min(limit, len(result.requests))
        section(f"Requests by max |delta| (top {shown} of {len(result.requests)}):",
                _table(_REQUEST_HEADER, _request_rows(result, limit)))
    return printable("\n".join(lines)) + "\n"


def _md_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    def line(cells: tuple[str, ...]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"
    return [line(header), "|" + "---|" * len(header), *(line(r) for r in rows)]


def render_markdown(result: ComparisonResult, limit: int = DEFAULT_LIMIT) -> str:
    """A PR comment: verdict heading, summary, then truncated tables of the findings."""
    summary = result.summary()
    logprobs = summary["logprobs"]
    lines = [
        f"### logitsmatch compare: **{result.verdict.upper()}**",
        "",
        f"`{_policy_text(result)}`",
        "",
        *([_metrics_line(result), ""] if result.metrics_origin else []),
        moved_text(result) + ".",
        "",
        *_md_table(("requests", "checks failed", "token divergences", "logprobs compared", "moved bitwise",
                    "over tolerance", "not comparable", "max |delta|", "max ulps", "p99 |delta|"),
                   [(str(summary["requests_compared"]), f"{len(result.failed_checks)} / {len(result.checks)}",
                     str(summary["requests_with_token_divergence"]), str(logprobs["compared"]), str(result.n_moved),
                     str(logprobs["over_tolerance"]), str(logprobs["not_comparable"]),
                     short_number(result.max_abs_delta), str(result.max_ulps),
                     short_number(result.p99_abs_delta))]),
    ]

    def section(title: str, body: list[str]) -> None:
        if body:
            lines.extend(["", f"#### {title}", "", *body])

    failed = result.failed_checks
    section(f"Failed checks ({len(failed)})",
            [f"- {_where(c)} `{c.metric}`: {c.message}" for c in failed[:limit]]
            + [f"- {m}" for m in _more(len(failed), limit)])
    section("Warnings", [f"- {w}" for w in result.warnings])
    changes = result.structural_changes
    section(f"Structural changes ({len(changes)})",
            [f"- `{_structural_text(c)}`" for c in changes[:limit]] + [f"- {m}" for m in _more(len(changes), limit)])
    divergences = _divergence_lines(result, limit)
    section("Token divergences and changed prompts",
            [f"  - {line.strip()}" if line.startswith("  ") else f"- {line}" for line in divergences])
    if len(result.drift):
        shown = min(limit, len(result.drift))
        section(f"Largest logprob drifts (top {shown} of {len(result.drift)})",
                _md_table(_drift_header(result), _drift_rows(result, result.drift, limit))
                + ["", *_more(len(result.drift), shown)])
    if len(result.moves):
        section(_moves_title(result), _md_table(_drift_header(result), _moves_rows(result))
                + ["", *_more(len(result.moves), MOVES_SHOWN)])
    if result.requests:
        shown = min(limit, len(result.requests))
        section(f"Requests by max |delta| (top {shown} of {len(result.requests)})",
                _md_table(_REQUEST_HEADER, _request_rows(result, limit)))
    return printable("\n".join(lines).rstrip()) + "\n"


def render_junit(result: ComparisonResult) -> bytes:
    """JUnit XML: one testcase per request x metric, plus run-level checks."""
    import xml.etree.ElementTree as ET

    counts = {s: sum(c.status == s for c in result.checks) for s in ("fail", "skip")}
    suites = ET.Element("testsuites", name="logitsmatch compare", tests=str(len(result.checks)),
                        failures=str(counts["fail"]))
    suite = ET.SubElement(suites, "testsuite", name="logitsmatch.judge.compare", tests=str(len(result.checks)),
                          failures=str(counts["fail"]), skipped=str(counts["skip"]), errors="0")
    properties = ET.SubElement(suite, "properties")
    for name, value in result.policy.to_dict().items():
        text = ",".join(value) if isinstance(value, list) else str(value)
        ET.SubElement(properties, "property", name=name, value=text)
    for check in result.checks:
        classname = "run" if check.request is None else _xml(f"request.{check.request}")
        case = ET.SubElement(suite, "testcase", classname=classname, name=check.metric)
        message = _xml(check.message)
        if check.status == "fail":
            request = result.requests.get(check.request)
            text = request.divergence_text if request is not None and check.metric == "generated_tokens" else None
            body = message + ("\n" + _xml(describe(text)) if text else "")
            ET.SubElement(case, "failure", message=message, type="drift").text = body
        elif check.status == "skip":
            ET.SubElement(case, "skipped", message=message)
    return ET.tostring(suites, encoding="utf-8", xml_declaration=True)


def write_json_report(result: ComparisonResult, path: str | os.PathLike) -> None:
    """Stream result.to_dict() to `path`, one line per request, atomically."""
    head = dumps_json(result.header_dict(), indent=True).rstrip()
    with atomic_writer(path) as out:
        out.write(head[:-1].rstrip())
        out.write(b',\n  "requests": {')
        for position, rid in enumerate(result.request_order):
            out.write(b",\n    " if position else b"\n    ")
            out.write(dumps_json(rid) + b": " + dumps_json(result.request_entry(rid)))
        out.write(b"\n  }\n}\n")


def write_reports(result: ComparisonResult, json_path: str | None = None,
                  markdown_path: str | None = None, junit_path: str | None = None) -> None:
    """Write each requested report file atomically."""
    if json_path:
        write_json_report(result, json_path)
    if markdown_path:
        with atomic_writer(markdown_path) as out:
            out.write(render_markdown(result).encode("utf-8"))
    if junit_path:
        with atomic_writer(junit_path) as out:
            out.write(render_junit(result))
