"""Harness inputs of two explain runs: what differs (weights, plan, stand-ins, adapter decisions, configs set by the
harness, the megatron-core identity, the hardware class), and whether the search's runs clear a difference.

A drift is blamed on a package only after these are checked: logitsmatch's own inputs come first. A run here is
an ``explain.suite_runs.Run``.
"""

from __future__ import annotations


def _paths_differing(a, b, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        found = []
        for key in sorted(set(a) | set(b), key=str):
            found += _paths_differing(a.get(key), b.get(key), f"{prefix}.{key}" if prefix else str(key))
        return found
    return [] if a == b else [prefix or "(root)"]


def harness_differences(baseline, candidate) -> list[dict]:
    """What logitsmatch fed the two runs differently, most decisive first."""
    a, b = baseline.provenance(), candidate.provenance()
    ha, hb = a.get("harness_inputs") or {}, b.get("harness_inputs") or {}
    found = []
    if ha.get("loaded_weights_digest") != hb.get("loaded_weights_digest"):
        names = set()
        for x, y in zip(baseline.inputs().get("ranks", []), candidate.inputs().get("ranks", [])):
            tx, ty = x["weights"].get("tensors", {}), y["weights"].get("tensors", {})
            names |= {
                n for n in set(tx) | set(ty) if (tx.get(n) or {}).get("sha256") != (ty.get(n) or {}).get("sha256")
            }
        found.append({"what": "loaded weights", "detail": f"{len(names)} tensor(s) differ as loaded on the ranks",
                      "tensors": sorted(n.split(":", 1)[-1] for n in names)})
    wa, wb = a.get("weights") or {}, b.get("weights") or {}
    if wa.get("sha256") != wb.get("sha256"):
        written = f"written digest {str(wa.get('sha256'))[:12]} vs {str(wb.get('sha256'))[:12]}"
        found.append(
            {
                "what": "synthetic checkpoint",
                "detail": f"{written} "
                f"(generator v{wa.get('generator_version')} vs v{wb.get('generator_version')}; each side writes "
                "its own)",
            }
        )
    plan_paths = _paths_differing(ha.get("plan"), hb.get("plan"))
    if plan_paths:
        found.append({"what": "plan", "detail": ", ".join(plan_paths[:12])})
    if a.get("stand_ins") != b.get("stand_ins"):
        only_a = sorted(set(a.get("stand_ins") or []) - set(b.get("stand_ins") or []))
        only_b = sorted(set(b.get("stand_ins") or []) - set(a.get("stand_ins") or []))
        why = " (the adapters' socket bindings differ with them)" if ha.get("adapter") != hb.get("adapter") else ""
        found.append({"what": "stand-ins", "detail": f"baseline only: {only_a}; candidate only: {only_b}{why}"})
    ma, mb = ha.get("megatron_core") or {}, hb.get("megatron_core") or {}
    release = f"megatron-core {ma.get('package_info_version')} vs {mb.get('package_info_version')}"
    if ha.get("adapter") != hb.get("adapter"):
        found.append(
            {
                "what": "adapter",
                "detail": f"{ha.get('adapter')} vs {hb.get('adapter')} (follows the release: {release})",
            }
        )
    decisions = _paths_differing(ha.get("adapter_decisions"), hb.get("adapter_decisions"))
    if decisions:
        found.append(
            {"what": "adapter decisions", "detail": ", ".join(decisions[:12]) + f" (adapter API of {release})"}
        )
    for what, record in _configurations(baseline).items():
        fields = config_differences(record, _configurations(candidate).get(what))
        if fields:
            more = f"; {len(fields) - 12} more" if len(fields) > 12 else ""
            found.append({"what": what, "detail": "; ".join(fields[:12]) + more, "fields": fields})
    for side, identity in (("baseline", ma), ("candidate", mb)):
        if identity_mismatch(identity):
            found.append({"what": "megatron-core identity", "detail": f"{side} {identity_mismatch(identity)}"})
    ca, cb = ha.get("hardware_class"), hb.get("hardware_class")
    if ca and cb and ca != cb:
        found.append({"what": "hardware class", "detail": f"{ca} vs {cb}: bitwise agreement is not expected across "
                      "hardware classes (a run's hardware is part of its result)"})
    return found


def _configurations(run) -> dict[str, dict]:
    """Rank 0's configuration records: the TransformerConfig and the adapter's inference configs."""
    ranks = run.inputs().get("ranks") or [{}]
    first = ranks[0]
    found = {"transformer config": first.get("transformer_config")}
    found.update({f"inference config ({name})": record for name, record in (first.get("configs") or {}).items()})
    return {what: record for what, record in found.items() if record}


def config_differences(a: dict | None, b: dict | None) -> list[str]:
    """The fields of one configuration that differ between two runs: a field both releases have, by value;
    a field one release lacks, where the other's value is not its default. Nothing when a run has no record."""
    if not a or not b:
        return []
    va, vb = a.get("values") or {}, b.get("values") or {}
    na, nb = set(a.get("not_default") or []), set(b.get("not_default") or [])
    found = []
    for name in sorted(set(va) | set(vb)):
        if name in va and name in vb:
            if va[name] != vb[name]:
                found.append(f"{name}: {va[name]!r} vs {vb[name]!r}")
        elif name in na:
            found.append(f"{name}: {va[name]!r} on the baseline, a field the candidate's release lacks")
        elif name in nb:
            found.append(f"{name}: {vb[name]!r} on the candidate (not that release's default), "
                         "a field the baseline's lacks")
    return found


def _harness_value(run, what: str):
    """The value of one kind of harness input in ``run`` (what ``harness_differences`` names)."""
    provenance = run.provenance()
    inputs = provenance.get("harness_inputs") or {}
    if what == "stand-ins":
        return sorted(provenance.get("stand_ins") or [])
    if what == "adapter":
        return inputs.get("adapter")
    if what == "adapter decisions":
        return inputs.get("adapter_decisions")
    record = _configurations(run).get(what)
    return None if record is None else record.get("values")


CHECKED_BY_THE_PROOF = ("stand-ins", "adapter", "adapter decisions")


def check_harness_differences(differences: list[dict], sides: tuple, runs: list) -> None:
    """Each harness difference a package move can carry (a stand-in, the adapter, a configuration) checked
    against the package search's runs before a package is blamed: ``difference["check"]``. A run that has
    the candidate's value and gives the baseline's result clears it; one that has the baseline's value and
    gives the candidate's shows the drift does not need it; else it follows the culprit."""
    baseline, candidate = sides
    judged = [run for run in runs if run.ok and run.outcome in ("good", "bad") and run not in sides]
    for difference in differences:
        what = difference["what"]
        if not (what in CHECKED_BY_THE_PROOF or what.endswith("config") or what.startswith("inference config")):
            continue
        base, cand = _harness_value(baseline, what), _harness_value(candidate, what)
        cleared = next((r for r in judged if r.outcome == "good" and _harness_value(r, what) == cand), None)
        unneeded = next((r for r in judged if r.outcome == "bad" and _harness_value(r, what) == base), None)
        if cleared:
            difference["check"] = (f"run {cleared.index} has the candidate's {what} and reproduces the baseline: "
                                   "it does not explain the drift")
        elif unneeded:
            difference["check"] = (f"run {unneeded.index} has the baseline's {what} and reproduces the candidate: "
                                   "the drift does not need it")
        else:
            difference["check"] = ("it follows the culprit: no run has one without the other, so the runs cannot "
                                   "tell the package from this harness input")


def identity_mismatch(identity: dict) -> str | None:
    """When the megatron-core a rank imports is not the release its dist metadata names (a source tree
    first on the path). Local version parts do not count: from 0.18 ``package_info`` appends the short
    sha of whatever git repository holds its install folder (a venv inside a checkout gets the
    checkout's HEAD), which says nothing about megatron-core."""
    meta, own = identity.get("metadata_version"), identity.get("package_info_version")
    if meta and own and meta.split("+")[0] != own.split("+")[0]:
        return f"imports {own} ({identity.get('file')}) while its dist metadata says {meta}"
    return None
