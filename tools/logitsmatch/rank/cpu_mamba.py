"""Pure-torch stand-ins for the mamba-ssm and causal-conv1d kernels megatron-core's Mamba mixer calls.

``megatron.core.ssm.mamba_mixer`` imports them inside ``try`` blocks and, when ``mamba_ssm`` is
missing, refuses to build a ``MambaMixer`` at all. Both packages are CUDA builds (Triton and CUDA
kernels), so without a GPU they are absent or unusable. What the mixer calls on the inference
path, megatron-core 0.15/0.16:

- prefill: ``causal_conv1d_fn`` (depthwise causal convolution, per-sequence through ``seq_idx``,
  or continuing from ``initial_states`` for a chunked prefill), ``causal_conv1d_varlen_states``
  (each sequence's last conv inputs, the decode state), ``mamba_chunk_scan_combined`` (the SSD
  scan, with the final and per-sequence states);
- decode: ``causal_conv1d_update`` and ``selective_state_update`` (one token, states in place,
  rows picked by the request's state slot);
- both: the gated RMSNorm ``mamba_ssm.ops.triton.layernorm_gated.RMSNorm``;
- training only: ``mamba_split_conv1d_scan_combined`` (the three above in one call).

Numerics: every kernel upcasts to float32 as the CUDA ones do, and returns its input's dtype;
states are stored in their buffer's dtype (fp32 or bf16, ``--mamba-inference-*-states-dtype``),
and a decode step reads the state it has just computed before that rounding, as the Triton
kernel does. The scan is the chunked SSD form (exact within a chunk, states passed between
chunks); the tests hold it against a per-timestep recurrence. The modules are installed into
``sys.modules`` only where CUDA is unavailable, before megatron-core is imported, and each is
named in the run's stand-ins list.
"""

from __future__ import annotations

import sys
import types

import torch
import torch.nn.functional as F

# The mamba-ssm / causal-conv1d APIs these stand-ins follow (varlen states, state_batch_indices,
# conv_state_indices); megatron's sequence-packing check asks for at least these versions.
EMULATED_MAMBA_SSM_VERSION = "2.2.6.post3"
EMULATED_CAUSAL_CONV1D_VERSION = "1.5.3.post1"
_ORIGIN = "logitsmatch.rank.cpu_mamba (pure torch)"


def _activate(values: torch.Tensor, activation: str | None) -> torch.Tensor:
    if activation in ("silu", "swish"):
        return F.silu(values)
    if activation is None:
        return values
    raise NotImplementedError(f"{_ORIGIN}: activation {activation!r} (only silu/swish or none)")


def causal_conv1d_fn(x, weight, bias=None, seq_idx=None, initial_states=None, return_final_states=False,
                     final_states_out=None, activation=None):
    """Depthwise causal convolution. x [b, d, l], weight [d, w], bias [d], seq_idx [b, l] (a token
    sees only earlier tokens of its own sequence), initial_states [b, d, w-1] (the inputs before
    position 0). Returns [b, d, l] in x's dtype (and the last w-1 inputs with return_final_states)."""
    width = weight.shape[-1]
    batch, dim, length = x.shape
    history = (initial_states.float() if initial_states is not None
               else x.new_zeros(batch, dim, width - 1, dtype=torch.float32))
    padded = torch.cat([history, x.float()], dim=-1)
    windows = padded.unfold(-1, width, 1)  # [b, d, l, w]: window t ends at token t
    if seq_idx is not None:
        owner = F.pad(seq_idx.long(), (width - 1, 0), value=-1).unfold(-1, width, 1)  # [b, l, w]
        windows = windows * (owner == seq_idx.long().unsqueeze(-1)).unsqueeze(1)
    out = (windows * weight.float().view(dim, 1, width)).sum(-1)
    if bias is not None:
        out = out + bias.float().view(dim, 1)
    out = _activate(out, activation).to(x.dtype)
    if not return_final_states:
        return out
    final = padded[..., -(width - 1):].to(x.dtype)
    if final_states_out is not None:
        final_states_out.copy_(final)
        final = final_states_out
    return out, final


def causal_conv1d_update(x, conv_state, weight, bias=None, activation=None, cache_seqlens=None,
                         conv_state_indices=None):
    """Decode step(s) of the causal convolution. x [b, d] or [b, d, l]; conv_state [n, d, s] (s >= w)
    shifts left by the new tokens in place; row i of the batch uses state row conv_state_indices[i]
    (a negative index is a padding slot: no update, zero output)."""
    if cache_seqlens is not None:
        raise NotImplementedError(f"{_ORIGIN}: circular conv state (cache_seqlens); megatron never uses it")
    single = x.dim() == 2
    tokens = x.unsqueeze(-1) if single else x
    width = weight.shape[-1]
    rows = (torch.arange(tokens.shape[0]) if conv_state_indices is None else conv_state_indices.long())
    out = torch.zeros_like(tokens)
    for position, row in enumerate(rows.tolist()):
        if row < 0:
            continue
        history = torch.cat([conv_state[row].float(), tokens[position].float()], dim=-1)
        windows = history[:, -(tokens.shape[-1] + width - 1):].unfold(-1, width, 1)  # [d, l, w]
        values = (windows * weight.float().unsqueeze(1)).sum(-1)
        if bias is not None:
            values = values + bias.float().unsqueeze(-1)
        out[position] = _activate(values, activation).to(x.dtype)
        conv_state[row].copy_(history[:, -conv_state.shape[-1]:])
    return out.squeeze(-1) if single else out


def causal_conv1d_varlen_states(x, cu_seqlens, state_len):
    """Each sequence's last ``state_len`` inputs, right-aligned and zero-padded: x [total, d] ->
    [n_seqs, d, state_len] (the conv state a decode step continues from)."""
    bounds = cu_seqlens.long().tolist()
    states = x.new_zeros(len(bounds) - 1, x.shape[-1], state_len)
    for index, (start, end) in enumerate(zip(bounds[:-1], bounds[1:])):
        kept = x[max(start, end - state_len):end]
        if kept.shape[0]:
            states[index, :, state_len - kept.shape[0]:] = kept.transpose(0, 1)
    return states


def _heads_per_group(values: torch.Tensor, heads: int, group_dim: int) -> torch.Tensor:
    """Broadcast B or C from its groups to the heads they serve."""
    return values.repeat_interleave(heads // values.shape[group_dim], dim=group_dim)


def selective_state_update(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False,
                           state_batch_indices=None, pad_slot_id=-1):
    """One SSM step. state [n, h, p, s] updated in place; x, dt, z [b, h, p]; A [h, p, s]; B, C [b, g, s];
    D, dt_bias [h, p]. Returns y [b, h, p] in x's dtype: C·state' + D·x, gated by silu(z)."""
    if x.dim() == 2:  # one head: the kernel's [b, p] form
        y = selective_state_update(state.unsqueeze(1), x.unsqueeze(1), dt.unsqueeze(1), A.unsqueeze(0),
                                   B.unsqueeze(1), C.unsqueeze(1), None if D is None else D.unsqueeze(0),
                                   None if z is None else z.unsqueeze(1),
                                   None if dt_bias is None else dt_bias.unsqueeze(0), dt_softplus,
                                   state_batch_indices, pad_slot_id)
        return y.squeeze(1)
    heads = x.shape[1]
    step = dt.float() + (dt_bias.float() if dt_bias is not None else 0.0)
    if dt_softplus:
        step = F.softplus(step)
    rows = (torch.arange(x.shape[0]) if state_batch_indices is None else state_batch_indices.long())
    live = rows != pad_slot_id
    previous = state[rows.clamp(min=0)].float()
    decay = torch.exp(step.unsqueeze(-1) * A.float())  # [b, h, p, s]
    inputs = (step * x.float()).unsqueeze(-1) * _heads_per_group(B.float(), heads, 1).unsqueeze(2)
    updated = previous * decay + inputs
    state[rows[live]] = updated[live].to(state.dtype)
    y = (updated * _heads_per_group(C.float(), heads, 1).unsqueeze(2)).sum(-1)
    if D is not None:
        y = y + x.float() * D.float()
    if z is not None:
        y = y * F.silu(z.float())
    return torch.where(live.view(-1, 1, 1), y, torch.zeros_like(y)).to(x.dtype)


def _segments(seq_idx_row: torch.Tensor | None, length: int) -> list[tuple[int, int]]:
    """[start, end) of each run of one sequence id along a row (the whole row without seq_idx)."""
    if seq_idx_row is None or length == 0:
        return [(0, length)]
    changes = (torch.nonzero(seq_idx_row[1:] != seq_idx_row[:-1]).flatten() + 1).tolist()
    bounds = [0, *changes, length]
    return list(zip(bounds[:-1], bounds[1:]))


def _scan_segment(x, step, A, B, C, state, chunk_size):
    """The SSD scan of one sequence in float32, chunk by chunk. x [l, h, p]; step [l, h]; A [h];
    B, C [l, h, s]; state [h, p, s] -> (y [l, h, p], final state [h, p, s])."""
    outputs = []
    for start in range(0, x.shape[0], chunk_size):
        xs, dts = x[start:start + chunk_size], step[start:start + chunk_size]
        bs, cs = B[start:start + chunk_size], C[start:start + chunk_size]
        log_decay = torch.cumsum(dts * A, dim=0)  # [c, h]: log of the decay from the chunk start to t
        span = log_decay.unsqueeze(1) - log_decay.unsqueeze(0)  # [t, j, h]
        causal = torch.ones(span.shape[:2], dtype=torch.bool).tril().unsqueeze(-1)
        weights = torch.exp(span.masked_fill(~causal, float("-inf")))  # decay from token j to token t
        scores = torch.einsum("ths,jhs->tjh", cs, bs) * weights * dts.unsqueeze(0)
        within = torch.einsum("tjh,jhp->thp", scores, xs)
        carried = torch.einsum("ths,hps->thp", cs, state) * torch.exp(log_decay).unsqueeze(-1)
        outputs.append(within + carried)
        to_end = torch.exp(log_decay[-1].unsqueeze(0) - log_decay) * dts  # [c, h]
        state = (state * torch.exp(log_decay[-1]).view(-1, 1, 1)
                 + torch.einsum("jh,jhp,jhs->hps", to_end, xs, bs))
    return torch.cat(outputs) if outputs else x.new_zeros(x.shape), state


def mamba_chunk_scan_combined(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, initial_states=None,
                              seq_idx=None, cu_seqlens=None, dt_softplus=False, dt_limit=(0.0, float("inf")),
                              return_final_states=False, return_varlen_states=False):
    """The Mamba-2 SSD scan. x [b, l, h, p]; dt [b, l, h]; A [h]; B, C [b, l, g, s]; D [h, p] or [h];
    z [b, l, h, p]; dt_bias [h]; initial_states [b, h, p, s]; seq_idx [b, l] (the state restarts at each
    new sequence); cu_seqlens [n+1] (for the per-sequence final states of return_varlen_states).
    Returns y [b, l, h, p] in x's dtype, then the row's final states [b, h, p, s] and the sequences'
    [n, h, p, s] (float32), as requested."""
    batch, length, heads, _ = x.shape
    step = dt.float() + (dt_bias.float() if dt_bias is not None else 0.0)
    if dt_softplus:
        step = F.softplus(step)
    if tuple(dt_limit) != (0.0, float("inf")):
        step = step.clamp(min=dt_limit[0], max=dt_limit[1])
    B_heads = _heads_per_group(B.float(), heads, 2)
    C_heads = _heads_per_group(C.float(), heads, 2)
    y = torch.zeros(x.shape, dtype=torch.float32)
    finals, ends = [], {}
    for row in range(batch):
        state = (initial_states[row].float() if initial_states is not None
                 else torch.zeros(heads, x.shape[-1], B.shape[-1]))
        for start, end in _segments(None if seq_idx is None else seq_idx[row], length):
            segment = slice(start, end)
            y[row, segment], final = _scan_segment(x[row, segment].float(), step[row, segment], A.float(),
                                                   B_heads[row, segment], C_heads[row, segment], state,
                                                   chunk_size)
            ends[(row, end)] = final
            state = torch.zeros_like(state)
        finals.append(final)
    if D is not None:
        y = y + x.float() * (D.float() if D.dim() == 2 else D.float().view(-1, 1))
    if z is not None:
        y = y * F.silu(z.float())
    results = [y.to(x.dtype)]
    if return_final_states:
        results.append(torch.stack(finals))
    if return_varlen_states:
        if cu_seqlens is None:
            raise ValueError(f"{_ORIGIN}: return_varlen_states needs cu_seqlens")
        results.append(torch.stack([ends[(0, end)] for end in cu_seqlens.long().tolist()[1:]]))
    return results[0] if len(results) == 1 else tuple(results)


def rmsnorm_fn(x, weight, bias=None, z=None, eps=1e-6, group_size=None, norm_before_gate=True):
    """Gated RMSNorm over groups of ``group_size`` channels: silu(z) gates before or after the norm."""
    values = x.float()
    gate = None if z is None else F.silu(z.float())
    if gate is not None and not norm_before_gate:
        values = values * gate
    size = group_size or values.shape[-1]
    grouped = values.reshape(*values.shape[:-1], values.shape[-1] // size, size)
    normed = (grouped * torch.rsqrt(grouped.pow(2).mean(-1, keepdim=True) + eps)).reshape(values.shape)
    out = normed * weight.float() + (bias.float() if bias is not None else 0.0)
    if gate is not None and norm_before_gate:
        out = out * gate
    return out.to(x.dtype)


class RMSNormGated(torch.nn.Module):
    """``mamba_ssm.ops.triton.layernorm_gated.RMSNorm``: a weight of ones, no bias, ``rmsnorm_fn``."""

    def __init__(self, hidden_size, eps=1e-5, group_size=None, norm_before_gate=True, device=None, dtype=None):
        super().__init__()
        self.eps, self.group_size, self.norm_before_gate = eps, group_size, norm_before_gate
        self.weight = torch.nn.Parameter(torch.ones(hidden_size, device=device, dtype=dtype))
        self.register_parameter("bias", None)

    def reset_parameters(self):
        torch.nn.init.ones_(self.weight)

    def forward(self, x, z=None):
        return rmsnorm_fn(x, self.weight, self.bias, z=z, eps=self.eps, group_size=self.group_size,
                          norm_before_gate=self.norm_before_gate)


def mamba_split_conv1d_scan_combined(zxbcdt, conv1d_weight, conv1d_bias, dt_bias, A, D, chunk_size,
                                     initial_states=None, seq_idx=None, dt_limit=(0.0, float("inf")),
                                     return_final_states=False, activation="silu", rmsnorm_weight=None,
                                     rmsnorm_eps=1e-6, outproj_weight=None, outproj_bias=None, headdim=None,
                                     ngroups=1, norm_before_gate=True):
    """Megatron's training path in one call: split z|xBC|dt, convolve, scan, gate (or gated norm),
    and the optional output projection. zxbcdt [b, l, d_in_proj] -> [b, l, d_inner or d_model]."""
    heads = A.shape[0]
    headdim = headdim or D.shape[-1]
    d_inner = heads * headdim
    d_state = (zxbcdt.shape[-1] - 2 * d_inner - heads) // (2 * ngroups)
    z, xBC, dt = torch.split(zxbcdt, [d_inner, d_inner + 2 * ngroups * d_state, heads], dim=-1)
    xBC = causal_conv1d_fn(xBC.transpose(1, 2), conv1d_weight, conv1d_bias, seq_idx=seq_idx,
                           activation=activation).transpose(1, 2)
    x, B, C = torch.split(xBC, [d_inner, ngroups * d_state, ngroups * d_state], dim=-1)
    batch, length = x.shape[:2]
    scanned = mamba_chunk_scan_combined(
        x.reshape(batch, length, heads, headdim), dt, A, B.reshape(batch, length, ngroups, d_state),
        C.reshape(batch, length, ngroups, d_state), chunk_size, D=D,
        z=None if rmsnorm_weight is not None else z.reshape(batch, length, heads, headdim), dt_bias=dt_bias,
        initial_states=initial_states, seq_idx=seq_idx, dt_softplus=True, dt_limit=dt_limit,
        return_final_states=return_final_states)
    y, final = scanned if return_final_states else (scanned, None)
    y = y.reshape(batch, length, d_inner)
    if rmsnorm_weight is not None:
        y = rmsnorm_fn(y, rmsnorm_weight, z=z, eps=rmsnorm_eps, group_size=d_inner // ngroups,
                       norm_before_gate=norm_before_gate)
    if outproj_weight is not None:
        y = F.linear(y, outproj_weight, outproj_bias)
    return (y, final) if return_final_states else y


def _module(name: str, **attributes) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attributes)
    return module


def standin_modules() -> dict[str, types.ModuleType]:
    """The import paths megatron-core's Mamba mixer reads, as modules serving these stand-ins."""
    return {
        "mamba_ssm": _module("mamba_ssm", __version__=EMULATED_MAMBA_SSM_VERSION),
        "mamba_ssm.ops": _module("mamba_ssm.ops"),
        "mamba_ssm.ops.triton": _module("mamba_ssm.ops.triton"),
        "mamba_ssm.ops.triton.selective_state_update": _module(
            "mamba_ssm.ops.triton.selective_state_update", selective_state_update=selective_state_update),
        "mamba_ssm.ops.triton.layernorm_gated": _module(
            "mamba_ssm.ops.triton.layernorm_gated", RMSNorm=RMSNormGated, rmsnorm_fn=rmsnorm_fn),
        "mamba_ssm.ops.triton.ssd_combined": _module(
            "mamba_ssm.ops.triton.ssd_combined", mamba_chunk_scan_combined=mamba_chunk_scan_combined,
            mamba_split_conv1d_scan_combined=mamba_split_conv1d_scan_combined),
        "causal_conv1d": _module("causal_conv1d", __version__=EMULATED_CAUSAL_CONV1D_VERSION,
                                 causal_conv1d_fn=causal_conv1d_fn, causal_conv1d_update=causal_conv1d_update),
        "causal_conv1d.causal_conv1d_varlen": _module(
            "causal_conv1d.causal_conv1d_varlen", causal_conv1d_varlen_states=causal_conv1d_varlen_states),
    }


def install() -> list[str]:
    """Serve mamba_ssm and causal_conv1d from these stand-ins where CUDA is unavailable (their kernels
    cannot run, installed or not). Must run before megatron.core.ssm is imported. Returns what it did."""
    if torch.cuda.is_available():
        return []
    if "megatron.core.ssm.mamba_mixer" in sys.modules:
        raise RuntimeError(f"{_ORIGIN}: megatron.core.ssm.mamba_mixer was imported before the Mamba stand-ins")
    applied = []
    for name, module in standin_modules().items():
        sys.modules[name] = module
        exported = sorted(key for key in vars(module) if not key.startswith("_") and key != "__version__")
        if exported:
            applied.append(f"{name}.{{{', '.join(exported)}}} -> {_ORIGIN}")
    applied.append(f"mamba_ssm {EMULATED_MAMBA_SSM_VERSION} / causal_conv1d {EMULATED_CAUSAL_CONV1D_VERSION} "
                   "APIs emulated (megatron's sequence-packing version check)")
    return applied


def tensor_get_slice_after(input_tensor, output_tensor, pos_on_device, check_bounds=False):
    """``output[:n - pos] = input[pos:]`` (megatron's Triton row copy; pos is a one-element tensor)."""
    start = int(pos_on_device[0])
    output_tensor[: input_tensor.shape[0] - start] = input_tensor[start:]


def tensor_merge(tensor_a, tensor_b, pos_on_device, output_tensor=None, check_bounds=False):
    """``out[:pos] = a[:pos]``, ``out[pos:pos + len(b)] = b`` (in place on a without output_tensor)."""
    start = int(pos_on_device[0])
    output = tensor_a if output_tensor is None else output_tensor
    if output_tensor is not None:
        output[:start] = tensor_a[:start]
    count = max(0, min(tensor_b.shape[0], output.shape[0] - start))
    output[start:start + count] = tensor_b[:count]


def tensor_masked_update(states, idx, new_states):
    """``states[idx[i]] = new_states[i]`` for every i whose idx is not -1."""
    keep = idx.long() != -1
    states[idx.long()[keep]] = new_states[keep].to(states.dtype)


TENSOR_OPS = {"tensor_get_slice_after": tensor_get_slice_after, "tensor_merge": tensor_merge,
              "tensor_masked_update": tensor_masked_update}
TENSOR_OPS_MODULE = "megatron.core.inference.contexts.attention_context.triton.tensor_ops"


def install_tensor_ops() -> list[str]:
    """megatron's Triton row copies the mixer uses, where CUDA is unavailable. Before megatron.core.ssm is
    imported: without triton (megatron-core 0.16 imports it unconditionally there) the module is served
    from here; call ``bind_tensor_ops`` after the import for releases whose own module did import."""
    if torch.cuda.is_available():
        return []
    try:
        import triton  # noqa: F401
    except ImportError:
        sys.modules[TENSOR_OPS_MODULE] = _module(TENSOR_OPS_MODULE, **TENSOR_OPS)
        return [f"{TENSOR_OPS_MODULE} (needs triton, absent) -> {_ORIGIN}"]
    return []


def bind_tensor_ops() -> list[str]:
    """Point the imported mixer's Triton row copies at these (no GPU to launch Triton kernels on)."""
    if torch.cuda.is_available():
        return []
    from megatron.core.ssm import mamba_mixer

    rebound = [name for name, op in TENSOR_OPS.items()
               if getattr(mamba_mixer, name, op) is not op and hasattr(mamba_mixer, name)]
    for name in rebound:
        setattr(mamba_mixer, name, TENSOR_OPS[name])
    return [f"ssm.mamba_mixer.{{{', '.join(rebound)}}} (Triton) -> {_ORIGIN}"] if rebound else []


def local_final_norm() -> list[str]:
    """The hybrid stack's final norm from megatron-core's local layers where Transformer Engine is absent.

    ``MambaStack`` (0.15-0.17 ``ssm.mamba_block``, 0.18+ ``models.hybrid.hybrid_block``) builds its final
    norm as ``TENorm`` whatever its spec says, which without Transformer Engine raises ImportError. The
    layers' norms come from the local spec already (``hybrid_builder``); the final one becomes the same
    class, megatron's ``WrappedTorchNorm`` (torch's LayerNorm / RMSNorm, the norm the GPT local spec uses).
    """
    import importlib

    from megatron.core.transformer.torch_norm import WrappedTorchNorm

    applied = []
    for name in ("megatron.core.ssm.mamba_block", "megatron.core.models.hybrid.hybrid_block"):
        try:
            block = importlib.import_module(name)
        except ImportError:
            continue
        norm = getattr(block, "TENorm", None)
        if norm is None or norm is WrappedTorchNorm or not _te_missing():
            continue
        block.TENorm = WrappedTorchNorm
        applied.append(f"{name.removeprefix('megatron.core.')}.TENorm (final norm; Transformer Engine absent) "
                       "-> megatron's WrappedTorchNorm")
    return applied


def _te_missing() -> bool:
    try:
        import transformer_engine  # noqa: F401
    except ImportError:
        return True
    return False
