"""Pure-torch stand-ins for megatron-core 0.17+'s own Triton SSM ops (``megatron.core.ssm.ops``).

From 0.17 the Mamba mixer's dynamic-inference path no longer calls mamba-ssm / causal-conv1d for its varlen
prefill and its decode step: it calls megatron's Triton kernels, which cannot launch without a GPU:

- prefill: ``causal_conv1d_varlen.causal_conv1d_varlen_fn`` (packed sequences, each from its own initial conv
  state) and ``ssd_combined.mamba_chunk_scan_combined_varlen`` (chunk metadata, per-sequence initial and final
  states, output written into ``out``);
- decode: ``causal_conv1d_triton.causal_conv1d_update`` and ``mamba_ssm.selective_state_update`` on
  ``[batch, tokens, ...]`` inputs (tokens > 1 only for speculative decoding, which these refuse).

Each is the same arithmetic as ``cpu_mamba``'s (held against the reference recurrence in tests/rank) in the
layout megatron's op takes; ``bind`` points the imported mixer at them where CUDA is unavailable.
"""

from __future__ import annotations

import torch

from logitsmatch.rank import cpu_mamba

_ORIGIN = "logitsmatch.rank.cpu_mamba_ops (pure torch)"


def _single_token(tensor: torch.Tensor | None, what: str):
    if tensor is not None and tensor.shape[1] != 1:
        raise NotImplementedError(f"{_ORIGIN}: {what} over {tensor.shape[1]} tokens (speculative decoding)")


def causal_conv1d_update(x, conv_state, weight, bias, silu_activation, conv_state_indices,
                         intermediate_conv_states=None):
    """megatron's decode conv: x [b, d] or [b, 1, d] (tokens before channels), conv_state [n, d, w] in place."""
    if intermediate_conv_states is not None:
        raise NotImplementedError(f"{_ORIGIN}: intermediate conv states (speculative decoding)")
    tokens = x if x.dim() == 3 else x.unsqueeze(1)
    _single_token(tokens, "causal_conv1d_update")
    out = cpu_mamba.causal_conv1d_update(tokens[:, 0], conv_state, weight, bias,
                                         "silu" if silu_activation else None, conv_state_indices=conv_state_indices)
    return out.unsqueeze(1) if x.dim() == 3 else out


def selective_state_update(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False,
                           state_batch_indices=None, intermediate_ssm_states=None):
    """megatron's decode SSM step on [b, 1, h, p] (or mamba-ssm's [b, h, p]) inputs; state [n, h, p, s] in place."""
    if intermediate_ssm_states is not None:
        raise NotImplementedError(f"{_ORIGIN}: intermediate SSM states (speculative decoding)")
    if x.dim() == 3:
        return cpu_mamba.selective_state_update(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus,
                                                state_batch_indices)
    _single_token(x, "selective_state_update")
    y = cpu_mamba.selective_state_update(state, x[:, 0], dt[:, 0], A, B[:, 0], C[:, 0], D,
                                         None if z is None else z[:, 0], dt_bias, dt_softplus, state_batch_indices)
    return y.unsqueeze(1)


def causal_conv1d_varlen_fn(x, weight, bias, cu_seqlens, initial_states=None, activation="silu",
                            precomputed_seq_idx=None, precomputed_seq_start=None):
    """Packed prefill conv: x [tokens, d]; sequence i covers cu_seqlens[i]:cu_seqlens[i+1] and continues from
    initial_states[i] [d, w-1]. Tokens past the last sequence (padding) come out zero."""
    out = torch.zeros_like(x)
    bounds = cu_seqlens.long().tolist()
    for index, (start, end) in enumerate(zip(bounds[:-1], bounds[1:])):
        if end > start:
            history = None if initial_states is None else initial_states[index:index + 1]
            out[start:end] = cpu_mamba.causal_conv1d_fn(x[start:end].T[None], weight, bias, initial_states=history,
                                                        activation=activation)[0].T
    return out


def mamba_chunk_scan_combined_varlen(x, dt, A, B, C, chunk_size, cu_chunk_seqlens, last_chunk_indices, seq_idx,
                                     out, D=None, z=None, dt_bias=None, initial_states=None, dt_softplus=False,
                                     dt_limit=(0.0, float("inf")), return_intermediate_states=False,
                                     intermediate_chunk_indices=None, return_raw_states=False, state_dtype=None):
    """Packed prefill scan: x [tokens, h, p]; chunk c covers cu_chunk_seqlens[c]:cu_chunk_seqlens[c+1]; sequence i
    is the chunks after sequence i-1's last up to last_chunk_indices[i], from initial_states[i]. Writes y into
    ``out``. Returns, in ``state_dtype``, what the release's kernel returns: the sequences' final states
    [n, h, p, s]; with ``intermediate_chunk_indices`` (0.17/0.18) also the states at the end of those chunks;
    every chunk's end state alone with ``return_intermediate_states`` (0.17/0.18), or after the final states with
    ``return_raw_states`` (0.19)."""
    boundaries = cu_chunk_seqlens.long().tolist()
    ends = torch.zeros(len(boundaries) - 1, x.shape[1], x.shape[2], B.shape[-1])
    finals, first = [], 0
    for index, last in enumerate(last_chunk_indices.long().tolist()):
        state = (initial_states[index].float() if initial_states is not None
                 else torch.zeros(x.shape[1], x.shape[2], B.shape[-1]))
        for chunk in range(first, last + 1):
            part = slice(boundaries[chunk], boundaries[chunk + 1])
            if part.stop > part.start:
                y, final = cpu_mamba.mamba_chunk_scan_combined(
                    x[None, part], dt[None, part], A, B[None, part], C[None, part], chunk_size, D=D,
                    z=None if z is None else z[None, part], dt_bias=dt_bias, initial_states=state[None],
                    dt_softplus=dt_softplus, dt_limit=dt_limit, return_final_states=True)
                out[part] = y[0]
                state = final[0]
            ends[chunk] = state
        finals.append(state)  # a padding request (no chunk): its state as it came
        first = last + 1
    dtype = state_dtype or torch.float32
    finals, ends = torch.stack(finals).to(dtype), ends.to(dtype)
    if return_intermediate_states:
        return ends
    if return_raw_states:
        return finals, ends
    if intermediate_chunk_indices is not None:
        return finals, ends[intermediate_chunk_indices.long()]
    return finals


def bind() -> list[str]:
    """Point the imported mixer (0.17+) at these, where CUDA is unavailable; returns what it rebound."""
    if torch.cuda.is_available():
        return []
    import importlib

    from megatron.core.ssm import mamba_mixer

    applied = []
    for name, stand_in in (("causal_conv1d_update", causal_conv1d_update),
                           ("selective_state_update", selective_state_update),
                           ("mamba_chunk_scan_combined_varlen", mamba_chunk_scan_combined_varlen)):
        if getattr(mamba_mixer, name, None) is not None and getattr(mamba_mixer, name) is not stand_in:
            origin = getattr(getattr(mamba_mixer, name), "__module__", "?")
            if origin.startswith("megatron.core.ssm.ops"):
                setattr(mamba_mixer, name, stand_in)
                applied.append(f"ssm.mamba_mixer.{name} ({origin}, Triton) -> {_ORIGIN}")
    try:
        varlen = importlib.import_module("megatron.core.ssm.ops.causal_conv1d_varlen")
    except ImportError:
        return applied
    if getattr(varlen, "causal_conv1d_varlen_fn", None) not in (None, causal_conv1d_varlen_fn):
        varlen.causal_conv1d_varlen_fn = causal_conv1d_varlen_fn
        applied.append(f"ssm.ops.causal_conv1d_varlen.causal_conv1d_varlen_fn (Triton) -> {_ORIGIN}")
    return applied
