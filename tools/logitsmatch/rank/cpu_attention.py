"""Pure-torch stand-ins for the two flash-attn (FA2) kernels megatron-core's
dynamic inference path calls, so the real DynamicInferenceEngine runs on CPU.

``Attention.flash_decode_and_prefill`` calls ``flash_attn_varlen_func`` for
prefill / mixed steps and ``flash_attn_with_kvcache`` for decode-only steps,
both reading K/V from the paged cache ``[num_blocks, block_size, kv_heads,
head_dim]`` through a ``block_table``. Only that subset of the FA2 API is
implemented; anything else raises ``NotImplementedError`` instead of silently
computing something different.

Numerics: q/k/v are upcast to float32 (float64 stays float64); QK^T, the
softmax and PV are computed entirely in that precision and the output is cast
back to q's dtype. (Flash-attn also accumulates in fp32 but rounds P to the
input dtype before the PV matmul, so bf16 results differ in the last bits.)
Causal masking is bottom-right aligned like FA >= 2.1: query i of a sequence
with Lq queries and Lk keys sees keys j <= i + Lk - Lq. Rows with no visible
key give 0 output and +inf log-sum-exp, as FA2 does. Query rows not covered by
any sequence (megatron pads the token dimension) are zero, not left
uninitialised as FA2 leaves them.
"""

import re

import torch

__all__ = ["flash_attn_varlen_func", "flash_attn_with_kvcache", "install"]

# The FA2 API version these stand-ins follow; answers megatron's version check.
EMULATED_FA_VERSION = "2.8.3"
_ORIGIN = "logitsmatch.rank.cpu_attention (pure torch)"


def _unsupported(**options):
    """Reject non-default options: better an error than a quietly wrong answer."""
    for name, (given, default) in options.items():
        value = tuple(given) if isinstance(given, list) else given
        if (value is not None) if default is None else (value != default):
            raise NotImplementedError(
                f"logitsmatch.rank.cpu_attention: {name}={value!r} is not supported "
                f"(only {default!r}); megatron's dynamic CPU path never needs it"
            )


def _gather_paged(cache, block_table, row, length):
    """The first ``length`` tokens of sequence ``row`` from a paged cache."""
    block_size = cache.shape[1]
    n_blocks = -(-length // block_size)
    ids = block_table[row, :n_blocks].long()
    if n_blocks and (ids.min() < 0 or ids.max() >= cache.shape[0]):
        # torch would wrap -1 (megatron's padding id) to the last block.
        raise ValueError(f"block_table row {row} has invalid block ids {ids.tolist()}")
    return cache[ids].reshape(n_blocks * block_size, *cache.shape[2:])[:length]


def _attend(q, k, v, scale, causal):
    """Attention of one sequence. q [Lq,H,D], k [Lk,Hk,D], v [Lk,Hk,Dv] ->
    (out [Lq,H,Dv] in q's dtype, lse [H,Lq] float32+)."""
    acc = torch.promote_types(q.dtype, torch.float32)
    lq, heads, lk, kv_heads = q.shape[0], q.shape[1], k.shape[0], k.shape[1]
    if heads % kv_heads:
        raise ValueError(f"{heads} query heads is not a multiple of {kv_heads} kv heads")
    group = heads // kv_heads  # query head h reads kv head h // group, as in FA2
    k = k.to(acc).repeat_interleave(group, dim=1)
    v = v.to(acc).repeat_interleave(group, dim=1)
    scores = torch.einsum("qhd,khd->hqk", q.to(acc), k) * scale
    if causal:
        i = torch.arange(lq, device=q.device).unsqueeze(1)
        j = torch.arange(lk, device=q.device).unsqueeze(0)
        scores = scores.masked_fill(j > i + (lk - lq), float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)  # [H, Lq]; -inf where nothing visible
    empty = torch.isinf(lse)
    probs = torch.exp(scores - lse.masked_fill(empty, 0.0).unsqueeze(-1))
    out = torch.einsum("hqk,khd->qhd", probs, v)
    return out.to(q.dtype), lse.masked_fill(empty, float("inf"))


def flash_attn_varlen_func(
    q,
    k,
    v,
    cu_seqlens_q,
    cu_seqlens_k,
    max_seqlen_q,
    max_seqlen_k,
    dropout_p=0.0,
    softmax_scale=None,
    causal=False,
    window_size=(-1, -1),
    softcap=0.0,
    alibi_slopes=None,
    deterministic=False,
    return_attn_probs=False,
    block_table=None,
):
    """FA2 ``flash_attn_varlen_func``: q [total_q, H, D]; k/v either packed
    [total_k, Hk, D] or, with ``block_table`` [B, max_blocks], the paged cache
    [num_blocks, block_size, Hk, D]. Returns out [total_q, H, Dv], or
    (out, lse [H, total_q], None) when ``return_attn_probs``. ``deterministic``
    is accepted and irrelevant (this is always deterministic)."""
    _unsupported(
        dropout_p=(dropout_p, 0.0),
        window_size=(tuple(window_size), (-1, -1)),
        softcap=(softcap, 0.0),
        alibi_slopes=(alibi_slopes, None),
    )
    scale = q.shape[-1] ** -0.5 if softmax_scale is None else softmax_scale
    cu_q, cu_k = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
    if len(cu_q) != len(cu_k):
        raise ValueError(f"cu_seqlens_q has {len(cu_q)} entries, cu_seqlens_k {len(cu_k)}")
    out = q.new_zeros(*q.shape[:2], v.shape[-1])
    acc = torch.promote_types(q.dtype, torch.float32)
    lse = torch.full((q.shape[1], q.shape[0]), float("inf"), dtype=acc, device=q.device)  # rows of no sequence
    for b in range(len(cu_q) - 1):
        (q0, q1), (k0, k1) = cu_q[b : b + 2], cu_k[b : b + 2]
        if q1 - q0 > max_seqlen_q or k1 - k0 > max_seqlen_k:
            raise ValueError(f"sequence {b} is longer than max_seqlen_q/max_seqlen_k")
        if q1 == q0 or k1 == k0:  # megatron's padding rows: zero output, +inf lse, as initialised
            continue
        if block_table is None:
            ks, vs = k[k0:k1], v[k0:k1]
        else:
            ks = _gather_paged(k, block_table, b, k1 - k0)
            vs = _gather_paged(v, block_table, b, k1 - k0)
        out[q0:q1], lse[:, q0:q1] = _attend(q[q0:q1], ks, vs, scale, causal)
    return (out, lse, None) if return_attn_probs else out


def flash_attn_with_kvcache(
    q,
    k_cache,
    v_cache,
    k=None,
    v=None,
    rotary_cos=None,
    rotary_sin=None,
    cache_seqlens=None,
    cache_batch_idx=None,
    cache_leftpad=None,
    block_table=None,
    softmax_scale=None,
    causal=False,
    window_size=(-1, -1),
    softcap=0.0,
    rotary_interleaved=True,
    alibi_slopes=None,
    num_splits=0,
    return_softmax_lse=False,
):
    """FA2 ``flash_attn_with_kvcache``, read-only: q [B, Sq, H, D]; k/v_cache
    paged [num_blocks, block_size, Hk, D] with ``block_table`` [B, max_blocks],
    or dense [B, S_max, Hk, D] without. ``cache_seqlens`` (int or [B]) counts
    the keys of each sequence (default: all S_max). Returns out [B, Sq, H, Dv],
    or (out, lse [B, H, Sq]) with ``return_softmax_lse``. Appending k/v and
    rotary (static-engine ``flash_decode``) are not supported; ``num_splits``
    only changes GPU reduction order and is ignored."""
    _unsupported(
        k=(k, None),
        v=(v, None),
        rotary_cos=(rotary_cos, None),
        rotary_sin=(rotary_sin, None),
        cache_batch_idx=(cache_batch_idx, None),
        cache_leftpad=(cache_leftpad, None),
        window_size=(tuple(window_size), (-1, -1)),
        softcap=(softcap, 0.0),
        alibi_slopes=(alibi_slopes, None),
    )
    scale = q.shape[-1] ** -0.5 if softmax_scale is None else softmax_scale
    batch, seq_q = q.shape[:2]
    if cache_seqlens is None:
        if block_table is not None:
            raise ValueError("a paged cache needs cache_seqlens")
        lengths = [k_cache.shape[1]] * batch
    elif isinstance(cache_seqlens, int):
        lengths = [cache_seqlens] * batch
    else:
        lengths = cache_seqlens.tolist()
    if len(lengths) != batch or (block_table is not None and block_table.shape[0] != batch):
        raise ValueError(f"q has batch {batch} but cache_seqlens/block_table disagree")
    out = q.new_zeros(*q.shape[:3], v_cache.shape[-1])
    lse = torch.full((batch, q.shape[2], seq_q), float("inf"), dtype=torch.promote_types(q.dtype, torch.float32),
                     device=q.device)
    for b, length in enumerate(lengths):
        if length == 0:  # megatron pads the decode batch to its request slots: those rows see no key
            continue
        if block_table is None:
            ks, vs = k_cache[b, :length], v_cache[b, :length]
        else:
            ks = _gather_paged(k_cache, block_table, b, length)
            vs = _gather_paged(v_cache, block_table, b, length)
        out[b], lse[b] = _attend(q[b], ks, vs, scale, causal)
    return (out, lse) if return_softmax_lse else out


def _version_tuple(version):
    return tuple(int(part) for part in re.findall(r"\d+", str(version))[:3])


def _is_fa_min_version(version, check_equality=True):
    """Stand-in for megatron.core.utils.is_fa_min_version (which imports
    flash_attn): compares against the FA2 version whose API we emulate."""
    have, want = _version_tuple(EMULATED_FA_VERSION), _version_tuple(version)
    return have >= want if check_equality else have > want


def install(attention_module):
    """Patch megatron.core.transformer.attention so its dynamic-batching path
    runs on CPU. Only fills in what megatron left as None because ``import
    flash_attn`` failed; if the real flash_attn imports, nothing is touched.
    Returns human-readable descriptions of the stand-ins applied."""
    try:
        import flash_attn  # noqa: F401  (real kernels available: leave them)

        return []
    except Exception:  # ImportError, or a broken CUDA install (OSError etc.)
        pass
    applied = []
    for name, stand_in in (
        ("flash_attn_varlen_func", flash_attn_varlen_func),
        ("flash_attn_with_kvcache", flash_attn_with_kvcache),
    ):
        if hasattr(attention_module, name) and getattr(attention_module, name) is None:
            setattr(attention_module, name, stand_in)
            applied.append(f"{name} -> {_ORIGIN}")
    # The dynamic-batching forward asserts is_fa_min_version("2.7.3"), whose
    # real implementation imports flash_attn; answer it for the emulated API.
    if applied and hasattr(attention_module, "is_fa_min_version"):
        attention_module.is_fa_min_version = _is_fa_min_version
        applied.append(f"is_fa_min_version -> emulated flash-attn {EMULATED_FA_VERSION} API")
    return applied
