"""What a rank computed with and what every module of its GPTModel produced.

* ``weights_record(model)``: a digest of the tensors the model computes with (its
  parameters and buffers as loaded on this rank, not the checkpoint's state dict), per
  name and overall. Two runs that load different weights differ here, whatever the
  checkpoint files say.
* ``Capture``: forward hooks on every submodule of the GPTModel for the first engine
  step (prefill) and the first K decode steps. Each output is recorded in execution
  order (hook completion order: a module after its children) with its shape, dtype and
  digests; the core attention runs inside ``Attention`` without a module of its own, so
  every ``linear_proj`` also records its *input* (output index ``in0``). Values are kept
  on each data-parallel engine's first rank (a plan that names ``value_ranks`` only: those),
  only the real token rows (padding rows are cut: their width differs between releases),
  each distinct tensor once, within a byte budget. The header names the rank's engine and
  that engine's ranks: in a DP suite the coordinator's choice of engine for a request varies
  from run to run, and ``judge.localize_prefix`` compares a request's rows on the engine that
  served it in each run. Each step also names its real rows by *prefix*: a digest of the
  request's tokens up to and including the row's own, the whole input that row's outputs
  depend on, so that two runs which batch the same requests differently (another schedule,
  another engine) can be aligned row by row. The format is documented in
  docs/capture_format.md; ``judge.localize`` reads it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

FORMAT_VERSION = 2


def tensor_bytes(tensor: torch.Tensor) -> bytes:
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""


def tensor_digest(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor_bytes(tensor)).hexdigest()


def weights_record(model) -> dict:
    """sha256 of every parameter and buffer the model computes with, and one digest over all."""
    tensors = {f"param:{name}": value for name, value in model.named_parameters()}
    tensors.update({f"buffer:{name}": value for name, value in model.named_buffers() if value is not None})
    per = {
        name: {
            "shape": list(value.shape),
            "dtype": str(value.dtype).replace("torch.", ""),
            "sha256": tensor_digest(value),
        }
        for name, value in sorted(tensors.items())
    }
    total = hashlib.sha256()
    for name, entry in per.items():
        total.update(f"{name}|{entry['shape']}|{entry['dtype']}|{entry['sha256']}\n".encode())
    return {"digest": total.hexdigest(), "tensors": per}


def _token_dim(tensor: torch.Tensor, padded: int) -> int | None:
    """The token dimension: the first as long as the padded step (None: no such dimension, e.g. the rotary table)."""
    return next((dim for dim, size in enumerate(tensor.shape) if size == padded), None)


def _valid_rows(tensor: torch.Tensor, dim: int | None, padded: int, active: int) -> torch.Tensor:
    """The real token rows: the token dimension ``dim`` cut to the active tokens."""
    if active >= padded or dim is None:
        return tensor
    return tensor.narrow(dim, 0, active)


def _as_int(value) -> int | None:
    if value is None:
        return None
    return int(value.item()) if isinstance(value, torch.Tensor) else int(value)


class Capture:
    """Hooks on one rank's GPTModel; ``close()`` writes what is not written yet."""

    def __init__(self, model, folder: Path, rank: int, spec: dict, engine: dict | None = None):
        """``engine``: this rank's data-parallel engine, {"index": its DP rank, "ranks": its ranks, "engines": how
        many there are} (None: not known, e.g. a toy model). The value budget is the run's: each engine's first
        rank keeps its share."""
        self.model = model
        self.folder = folder
        self.rank = rank
        self.last_step = int(spec.get("decode_steps", 3))
        engine_first = engine is not None and rank == min(engine["ranks"])
        self.keep_values = rank in spec.get("value_ranks", [0]) or (spec.get("value_engine_first", False)
                                                                     and engine_first)
        self.budget = int(spec.get("value_budget_bytes", 200_000_000))
        if spec.get("value_engine_first", False) and engine is not None:
            self.budget //= max(1, engine["engines"])
        self.stored_bytes = 0
        self.over_budget = 0
        self.step = -1
        self.order = 0
        self.padded = 0
        self.active = 0
        self.values: dict[str, np.ndarray] = {}
        self.stored: dict[tuple, str] = {}
        self.request_prefixes: dict[int, tuple[int, object]] = {}  # request -> (tokens seen, sha256 over them)
        self.handles: list = []
        self.closed = False
        folder.mkdir(parents=True, exist_ok=True)
        self.meta = open(folder / f"rank-{rank}.jsonl", "w")  # closed in close()
        header = {"kind": "header", "format": FORMAT_VERSION, "rank": rank, "decode_steps": self.last_step,
                  "values": self.keep_values, "value_budget_bytes": self.budget}
        if engine is not None:
            header.update(engine=engine["index"], engine_ranks=sorted(engine["ranks"]))
        self._write(header)

    def install(self) -> Capture:
        self.handles.append(self.model.register_forward_pre_hook(self._step_begins, with_kwargs=True))
        for name, module in self.model.named_modules():
            self.handles.append(module.register_forward_hook(self._output_hook(name or "<GPTModel>")))
            if name.endswith("linear_proj"):  # the attention's result: the core attention is no module
                self.handles.append(module.register_forward_pre_hook(self._input_hook(name)))
        return self

    # --- hooks -----------------------------------------------------------------------
    def _step_begins(self, module, args, kwargs):
        self.step += 1
        if self.step > self.last_step:
            return
        ids = args[0] if args else kwargs.get("input_ids")
        positions = args[1] if len(args) > 1 else kwargs.get("position_ids")
        context = kwargs.get("inference_context") or kwargs.get("inference_params")
        self.padded = int(ids.shape[-1])
        active = _as_int(getattr(context, "active_token_count", None))
        self.active = self.padded if active is None else active
        record = {"kind": "step", "step": self.step, "input_ids_shape": list(ids.shape), "padded_tokens": self.padded,
                  "active_tokens": self.active, "valid_ids_sha256": tensor_digest(ids[..., : self.active])}
        if positions is not None:
            record["valid_positions_sha256"] = tensor_digest(positions[..., : self.active])
            record.update(self._row_prefixes(context, ids, positions))
        self._write(record)

    def _row_prefixes(self, context, ids: torch.Tensor, positions: torch.Tensor) -> dict:
        """Each real row's request, position and prefix digest (sha256 of the request's int64 token ids up to and
        including the row's, first 16 hex digits); {} where the context does not say which request a row is."""
        slots = getattr(context, "token_to_request_idx", None)
        request_ids = getattr(context, "request_ids", None)
        if not isinstance(slots, torch.Tensor) or not isinstance(request_ids, torch.Tensor):
            return {}
        rows = slots[: self.active].long()
        if rows.numel() and (int(rows.min()) < 0 or int(rows.max()) >= request_ids.numel()):
            return {}  # not request rows (an idle engine's dummy step leaves the bookkeeping as it was)
        requests = request_ids[rows].tolist()
        tokens, where = ids.reshape(-1)[: self.active].tolist(), positions.reshape(-1)[: self.active].tolist()
        prefixes = []
        for request, token, position in zip(requests, tokens, where):
            count, digest = self.request_prefixes.get(request, (0, hashlib.sha256()))
            if position != count:  # a row not next in its request (not seen from its first token): no key
                prefixes.append(None)
                continue
            digest = digest.copy()  # extended one token at a time: each row hashes its own token only
            digest.update(np.int64(token).tobytes())
            self.request_prefixes[request] = (count + 1, digest)
            prefixes.append(digest.hexdigest()[:16])
        return {"row_requests": requests, "row_positions": where, "row_prefixes": prefixes}

    def _output_hook(self, name: str):
        def hook(module, args, output):
            if self.step > self.last_step or self.step < 0:
                return
            items = output if isinstance(output, (tuple, list)) else (output,)
            for index, item in enumerate(items):
                if isinstance(item, torch.Tensor):
                    self._record(name, str(index), item)
            if module is self.model and self.step == self.last_step:
                self.close()
        return hook

    def _input_hook(self, name: str):
        def hook(module, args):
            if 0 <= self.step <= self.last_step and args and isinstance(args[0], torch.Tensor):
                self._record(name, "in0", args[0])
        return hook

    # --- records -----------------------------------------------------------------------
    def _record(self, name: str, output: str, tensor: torch.Tensor) -> None:
        token_dim = _token_dim(tensor, self.padded)
        valid = _valid_rows(tensor.detach(), token_dim, self.padded, self.active)
        valid_sha = tensor_digest(valid)
        record = {
            "kind": "output",
            "step": self.step,
            "order": self.order,
            "name": name,
            "output": output,
            "shape": list(tensor.shape),
            "valid_shape": list(valid.shape),
            "dtype": str(tensor.dtype).replace("torch.", ""),
            "sha256": tensor_digest(tensor) if valid.shape != tensor.shape else valid_sha,
            "valid_sha256": valid_sha,
            "token_dim": token_dim,
            "values": None,
        }
        self.order += 1
        if self.keep_values:
            record["values"] = self._store(name, output, valid, valid_sha)
        self._write(record)

    def _store(self, name: str, output: str, valid: torch.Tensor, digest: str) -> str | None:
        key = (name, output, digest)
        if key in self.stored:  # the same tensor again (e.g. the rotary table every step): stored once
            return self.stored[key]
        # a copy: on the CPU .to/.float/.numpy share the live tensor's memory, and megatron changes some outputs in
        # place after their hook (rotary embedding on the keys in linear_qkv's output)
        array = valid.to("cpu", copy=True)
        array = (array.float() if array.is_floating_point() else array.long()).numpy()
        if self.stored_bytes + array.nbytes > self.budget:
            self.over_budget += 1
            return None
        label = f"v{len(self.values):05d}"
        self.values[label] = np.ascontiguousarray(array)
        self.stored_bytes += array.nbytes
        self.stored[key] = label
        return label

    def _write(self, record: dict) -> None:
        self.meta.write(json.dumps(record) + "\n")

    def close(self) -> None:
        """Write the values and the footer once; remove the hooks (later steps run unobserved)."""
        if self.closed:
            return
        self.closed = True
        for handle in self.handles:
            handle.remove()
        if self.keep_values:
            np.savez(self.folder / f"rank-{self.rank}.npz", **self.values)
        self._write({"kind": "footer", "steps": min(self.step, self.last_step) + 1, "records": self.order,
                     "stored_bytes": self.stored_bytes, "not_stored_over_budget": self.over_budget})
        self.meta.close()
        self.values.clear()
