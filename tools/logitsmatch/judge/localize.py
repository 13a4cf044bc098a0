"""Where two runs part inside the model: align two captures module by module.

A capture (``logitsmatch run --capture``, docs/capture_format.md) holds, per rank, the
engine steps it saw and every module output of those steps in execution order, with
digests of the real token rows and, on the value ranks, their values. Two captures are
aligned by (step, module name, output index, occurrence); the steps must hold the same
tokens (same active token count and token ids) or step k would mean different things in
the two runs, and the localization refuses. Then:

* the first module whose real-row digest differs on any rank: the first *bitwise* move;
* per module, max |Δ| over the value ranks' real rows, decided by the one comparator
  (``judge.numerics.compare_arrays``), and the first module beyond the tolerance.

Where the steps differ, ``judge.localize_prefix`` aligns row by row by prefix instead. In a
data-parallel suite the coordinator's choice of engine for a request varies from run to run:
a capture whose header names each rank's engine says which engine served which request, and
where the two runs differ in that, the refusal says so ("the two runs were served by different
data-parallel engines: ...") rather than blaming a batch schedule.

What cannot be aligned is named, never dropped: an output or a rank one capture lacks, and
an output whose shape or dtype differs between the two (no max |Δ| is made up for it).
A capture file that is not what ``run --capture`` writes is one BadInput line naming it.

Pure reading and numpy: no torch.
"""

from __future__ import annotations

import json
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from logitsmatch.errors import BadInput
from logitsmatch.files import check_regular, read_input, read_text_input
from logitsmatch.judge.figures import short_number
from logitsmatch.judge.golden_io import json_float
from logitsmatch.judge.numerics import compare_arrays
from logitsmatch.judge.policy import Mode, Policy

DEFAULT_TOLERANCE = Policy(mode=Mode.APPROXIMATE, failure_budget=0)  # the mode's tolerances, no budget


@dataclass
class RankCapture:
    rank: int
    steps: dict[int, dict]
    outputs: list[dict]
    values: object | None  # np.lib.npyio.NpzFile or None
    footer: dict | None
    header: dict | None = None

    @property
    def engine(self) -> int | None:
        """The data-parallel engine this rank belongs to (None: a capture that does not say)."""
        return (self.header or {}).get("engine")

    @property
    def role(self) -> str:
        """Which rank of its engine this is: ranks in the same place of their engines hold the same shards, so two
        runs pair them whichever engine served a request (``judge.localize_prefix``)."""
        return f"rank {self.header['engine_ranks'].index(self.rank)} of its engine"


@dataclass
class CaptureSet:
    folder: Path
    ranks: dict[int, RankCapture]
    inputs: dict | None = None  # inputs.json beside the capture (per-rank loaded-weights digests)

    @property
    def value_ranks(self) -> list[int]:
        return [rank for rank, capture in self.ranks.items() if capture.values is not None]


_RANK_FILE = re.compile(r"rank-(\d{1,6})\.jsonl")
# the fields this module reads, by record kind, and their JSON types
_FIELDS = {
    "step": {"step": int, "active_tokens": int, "valid_ids_sha256": str},
    "output": {"step": int, "order": int, "name": str, "output": str, "valid_shape": list, "valid_sha256": str},
}


def _check_record(where: str, record) -> None:
    if not isinstance(record, dict):
        raise BadInput(f"{where}: a capture record is a JSON object, not {type(record).__name__}")
    for name, kind in _FIELDS.get(record.get("kind"), {}).items():
        value = record.get(name)
        if type(value) is not kind:
            raise BadInput(f"{where}: a {record['kind']} record needs {name!r} ({kind.__name__}), got {value!r:.40}")


def _check_header(where: str, record: dict, rank: int) -> None:
    engine, ranks = record.get("engine"), record.get("engine_ranks")
    if engine is None and ranks is None:
        return
    if type(engine) is not int or not isinstance(ranks, list) or not all(type(r) is int for r in ranks) \
            or rank not in ranks:
        raise BadInput(f"{where}: a header's engine is an int and its engine_ranks the ints that include rank {rank}")


def _read_rank(path: Path, rank: int) -> tuple[dict, list, dict | None, dict | None]:
    steps, outputs, footer, header = {}, [], None, None
    for number, line in enumerate(read_text_input(path, "capture file").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}: line {number}"
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            raise BadInput(f"{where}: not JSON (not a capture file)") from None
        _check_record(where, record)
        kind = record.get("kind")
        if kind == "step":
            named = [record.get(name) for name in ("row_requests", "row_positions", "row_prefixes")]
            if any(field is not None for field in named) and not (
                    all(isinstance(field, list) for field in named) and len({len(field) for field in named}) == 1
                    and len(named[0]) == record["active_tokens"]):
                raise BadInput(f"{where}: a step's row_requests, row_positions and row_prefixes are lists, one entry "
                               "per active token")
            steps[record["step"]] = record
        elif kind == "output":
            if record.get("values") is not None and not isinstance(record["values"], str):
                raise BadInput(f"{where}: an output record's 'values' is a key into the .npz or null")
            outputs.append(record)
        elif kind == "footer":
            footer = record
        elif kind == "header":
            _check_header(where, record, rank)
            header = record
    return steps, outputs, footer, header


def _read_values(path: Path):
    check_regular(path, "capture values file")
    try:
        values = np.load(path, allow_pickle=False)
        if not isinstance(values, np.lib.npyio.NpzFile):
            raise ValueError("not an .npz archive")
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise BadInput(f"{path}: not a capture values file ({exc})") from None
    return values


def _read_inputs(path: Path) -> dict | None:
    if not path.exists():
        return None
    try:
        inputs = json.loads(read_input(path, "inputs file"))
    except (ValueError, RecursionError):
        raise BadInput(f"{path}: not JSON") from None
    ranks = inputs.get("ranks") if isinstance(inputs, dict) else None
    if not isinstance(ranks, list) or not all(
        isinstance(rank, dict) and isinstance(rank.get("weights"), dict)
        and isinstance(rank["weights"].get("tensors", {}), dict) for rank in ranks
    ):
        raise BadInput(f"{path}: not the per-rank inputs a run writes (ranks[].weights.tensors)")
    return inputs


def read_capture(folder: str | Path) -> CaptureSet:
    """A capture folder (``capture/`` beside a result, or the folder holding ``rank-N.jsonl``)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BadInput(f"{folder}: not a folder (a capture is the capture/ folder of a run with --capture)")
    if (folder / "capture").is_dir() and not list(folder.glob("rank-*.jsonl")):
        folder = folder / "capture"
    files = sorted(folder.glob("rank-*.jsonl"))
    if not files:
        raise BadInput(f"{folder}: not a capture (no rank-N.jsonl; run logitsmatch run ... --capture)")
    ranks = {}
    for path in files:
        match = _RANK_FILE.fullmatch(path.name)
        if match is None:
            raise BadInput(f"{path}: not a capture file name (rank-N.jsonl, N the rank)")
        rank = int(match.group(1))
        steps, outputs, footer, header = _read_rank(path, rank)
        values_path = path.with_suffix(".npz")
        values = _read_values(values_path) if values_path.exists() or values_path.is_symlink() else None
        ranks[rank] = RankCapture(rank, steps, outputs, values, footer, header)
    return CaptureSet(folder, dict(sorted(ranks.items())), _read_inputs(folder.parent / "inputs.json"))


def _keyed(outputs: list[dict]) -> dict[tuple, dict]:
    """(step, name, output, occurrence) -> record, in execution order."""
    seen: dict[tuple, int] = {}
    keyed = {}
    for record in outputs:
        base = (record["step"], record["name"], record["output"])
        seen[base] = seen.get(base, -1) + 1
        keyed[(*base, seen[base])] = record
    return keyed


@dataclass
class ModuleRow:
    step: int
    order: int
    name: str
    output: str
    shape: list
    ranks_compared: int
    ranks_differing: int
    max_abs_delta: float | None  # over the value ranks' real rows; None without values or when unaligned
    beyond_tolerance: bool | None
    mismatch: str | None = None  # why the two sides cannot be compared value by value (shape, dtype)
    rows_note: str | None = None  # aligned by prefix: how many shared rows differ, and the first


    @property
    def differs(self) -> bool:
        return self.ranks_differing > 0

    def to_dict(self) -> dict:
        return {"step": self.step, "order": self.order, "name": self.name, "output": self.output, "shape": self.shape,
                "ranks_compared": self.ranks_compared, "ranks_differing": self.ranks_differing,
                "max_abs_delta": json_float(self.max_abs_delta),
                "beyond_tolerance": self.beyond_tolerance, "mismatch": self.mismatch, "rows": self.rows_note}


@dataclass
class Localization:
    rows: list[ModuleRow]
    tolerance: Policy
    schedule_problem: str | None = None
    weights_differing: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # ranks and outputs only one side has, each saying which

    @property
    def mismatched(self) -> list[ModuleRow]:
        return [row for row in self.rows if row.mismatch]

    @property
    def first_bitwise(self) -> ModuleRow | None:
        return next((row for row in self.rows if row.differs), None)

    @property
    def first_beyond_tolerance(self) -> ModuleRow | None:
        return next((row for row in self.rows if row.beyond_tolerance), None)

    def summary(self) -> str:
        if self.schedule_problem:
            return f"not comparable: {self.schedule_problem}"
        first = self.first_bitwise
        if not self.rows:
            return "nothing compared: no module output is in both captures"
        if first is None:
            return f"no module output differs ({len(self.rows)} outputs compared, real token rows)"
        return f"first moving module {describe(first)}"

    def to_dict(self) -> dict:
        def brief(row):
            return (
                None
                if row is None
                else {
                    "name": row.name,
                    "output": row.output,
                    "step": row.step,
                    "step_kind": step_kind(row.step),
                    "max_abs_delta": row.to_dict()["max_abs_delta"],
                }
            )

        return {
            "schedule_problem": self.schedule_problem,
            "tolerance": {"abs_tol": self.tolerance.abs_tol, "rel_tol": self.tolerance.rel_tol},
            "first_bitwise": brief(self.first_bitwise),
            "first_beyond_tolerance": brief(self.first_beyond_tolerance),
            "loaded_weights_differing": self.weights_differing,
            "only_one_side": self.missing,
            "mismatched": [{"name": row.name, "output": row.output, "step": row.step, "mismatch": row.mismatch}
                           for row in self.mismatched],
            "modules": [row.to_dict() for row in self.rows],
        }


def step_kind(step: int) -> str:
    return "prefill" if step == 0 else f"decode {step}"


def describe(row: ModuleRow) -> str:
    name = row.name + (" (input: the attention's output)" if row.output == "in0" else "")
    delta = "" if row.max_abs_delta is None else f", max |Δ| {short_number(row.max_abs_delta)}"
    delta += f", {row.mismatch}" if row.mismatch else ""
    delta += f"; {row.rows_note}" if row.rows_note else ""
    return f"{name} ({step_kind(row.step)}{delta})"


def served_by(capture: CaptureSet) -> dict[int, int]:
    """{request id: the engine whose steps hold its rows}, from the ranks whose header names their engine."""
    served: dict[int, int] = {}
    for rank in capture.ranks.values():
        for step in rank.steps.values() if rank.engine is not None else ():
            for request in step.get("row_requests") or ():
                served.setdefault(request, rank.engine)
    return served


def _engines_differ(a: CaptureSet, b: CaptureSet) -> str | None:
    """The requests another engine served in the second run: ``request 0 by engine 0 vs engine 1, ...``."""
    x, y = served_by(a), served_by(b)
    moved = [f"request {request} by engine {x[request]} vs engine {y[request]}"
             for request in sorted(set(x) & set(y)) if x[request] != y[request]]
    if not moved:
        return None
    return ", ".join(moved[:3]) + (f" … and {len(moved) - 3} more" if len(moved) > 3 else "")


def _first_different_step(a: CaptureSet, b: CaptureSet) -> str | None:
    """Where the steps of a rank first hold different tokens: ``from prefill on (rank 0: 129 vs 4 active tokens)``."""
    for rank in sorted(set(a.ranks) & set(b.ranks)):
        steps_a, steps_b = a.ranks[rank].steps, b.ranks[rank].steps
        for step in sorted(set(steps_a) & set(steps_b)):
            x, y = steps_a[step], steps_b[step]
            if (x["active_tokens"], x["valid_ids_sha256"]) != (y["active_tokens"], y["valid_ids_sha256"]):
                return (f"from {step_kind(step)} on (rank {rank}: {x['active_tokens']} vs {y['active_tokens']} "
                        "active tokens)")
    return None


def _schedule_problem(a: CaptureSet, b: CaptureSet) -> str | None:
    """Why step k means different things in the two runs: another engine served a request (an idle engine may
    step nothing at all), or the steps hold different tokens."""
    engines, steps = _engines_differ(a, b), _first_different_step(a, b)
    if engines:
        return (f"the two runs were served by different data-parallel engines: {engines} (the coordinator's choice, "
                "which varies from run to run)" + (f", so the engine steps hold different tokens {steps}"
                                                   if steps else ""))
    if steps:
        return f"the engine steps hold different tokens {steps}; a different batch schedule, not a module, separates " \
               "these runs"
    return None


def weights_differing_tensors(a: CaptureSet, b: CaptureSet) -> list[str]:
    if not a.inputs or not b.inputs:
        return []
    names = set()
    for x, y in zip(a.inputs.get("ranks", []), b.inputs.get("ranks", [])):
        tx, ty = x["weights"].get("tensors", {}), y["weights"].get("tensors", {})
        names |= {
            name
            for name in set(tx) | set(ty)
            if (tx.get(name) or {}).get("sha256") != (ty.get(name) or {}).get("sha256")
        }
    return sorted(name.split(":", 1)[-1] for name in names)


def stored_values(capture: CaptureSet, rank: int, key: str) -> np.ndarray:
    """One stored array of a value rank; a missing or unreadable one is a BadInput naming the file."""
    where = f"{capture.folder}/rank-{rank}.npz"
    try:
        values = np.asarray(capture.ranks[rank].values[key])
    except KeyError:
        raise BadInput(f"{where}: holds no array {key!r} (rank-{rank}.jsonl names it)") from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise BadInput(f"{where}: array {key!r} cannot be read ({exc})") from None
    if values.dtype.kind not in "biuf":
        raise BadInput(f"{where}: array {key!r} holds {values.dtype}, not numbers")
    return values


def only_side(key, left: dict) -> str:
    return "only in the first capture" if key in left else "only in the second capture"


def localize(a: CaptureSet, b: CaptureSet, tolerance: Policy = DEFAULT_TOLERANCE) -> Localization:
    """Align two captures and find the first module whose output moved; name what does not align."""
    common = sorted(set(a.ranks) & set(b.ranks))
    if not common:
        raise BadInput("the two captures share no rank")
    result = Localization([], tolerance, _schedule_problem(a, b), weights_differing_tensors(a, b))
    result.missing = [f"rank {rank}: {only_side(rank, a.ranks)}" for rank in sorted(set(a.ranks) ^ set(b.ranks))]
    if result.schedule_problem:
        return result
    keyed = {rank: (_keyed(a.ranks[rank].outputs), _keyed(b.ranks[rank].outputs)) for rank in common}
    order_rank = common[0]
    left, right = keyed[order_rank]
    result.missing += [f"{k[1]}#{k[2]} ({step_kind(k[0])}): {only_side(k, left)}"
                       for k in list(left) + list(right) if (k in left) != (k in right)]
    value_ranks = [rank for rank in common if a.ranks[rank].values is not None and b.ranks[rank].values is not None]
    for key, record in left.items():
        if key not in right:
            continue
        differing = compared = 0
        shape = dtype = None
        for rank in common:
            x, y = keyed[rank][0].get(key), keyed[rank][1].get(key)
            if x is None or y is None:
                continue
            compared += 1
            differing += (x["valid_sha256"] != y["valid_sha256"]) or (x["valid_shape"] != y["valid_shape"])
            if shape is None and x["valid_shape"] != y["valid_shape"]:
                shape = f"shape {x['valid_shape']} vs {y['valid_shape']} (rank {rank})"
            if dtype is None and x.get("dtype") != y.get("dtype"):
                dtype = f"dtype {x.get('dtype')} vs {y.get('dtype')} (rank {rank})"
        delta, beyond = None, None
        for rank in value_ranks if shape is None else ():
            x, y = keyed[rank][0].get(key), keyed[rank][1].get(key)
            if x is None or y is None or x.get("values") is None or y.get("values") is None:
                continue
            va, vb = stored_values(a, rank, x["values"]), stored_values(b, rank, y["values"])
            if va.shape != vb.shape:
                shape = f"stored values' shape {list(va.shape)} vs {list(vb.shape)} (rank {rank})"
                delta, beyond = None, None
                break
            judged = compare_arrays(va, vb, tolerance)
            delta = max(delta or 0.0, judged["max_abs_delta"])
            beyond = bool(beyond) or judged["n_over"] > 0
        mismatch = "; ".join(filter(None, (shape, dtype))) or None
        result.rows.append(ModuleRow(record["step"], record["order"], record["name"], record["output"],
                                     record["valid_shape"], compared, differing, delta, beyond, mismatch))
    return result
