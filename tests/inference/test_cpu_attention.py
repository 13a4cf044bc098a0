"""logitsmatch.rank.cpu_attention vs a float64 full-sequence causal attention oracle.

The call shapes mirror megatron-core's Attention.flash_decode_and_prefill
(0.16.1 and 0.19.2): varlen over a paged cache for prefill/mixed steps,
with_kvcache over a paged cache for decode-only steps.
"""

import types

import pytest

from support import require_toolchain_module

torch = require_toolchain_module("torch")

from logitsmatch.rank import cpu_attention  # noqa: E402
from logitsmatch.rank.cpu_attention import (  # noqa: E402
    flash_attn_varlen_func,
    flash_attn_with_kvcache,
)

ATOL = RTOL = 1e-5  # float32


def oracle(q, k, v, scale=None):
    """softmax(QK^T*scale + causal)V in float64 over a whole sequence.

    q [Lq,H,D] are the last Lq positions of the Lk-token sequence k/v [Lk,Hk,D].
    Returns (out [Lq,H,Dv], lse [H,Lq])."""
    lq, heads, dim = q.shape
    lk, kv_heads = k.shape[:2]
    scale = dim**-0.5 if scale is None else scale
    kv_of_head = torch.tensor([h // (heads // kv_heads) for h in range(heads)])
    k = k.double().index_select(1, kv_of_head)
    v = v.double().index_select(1, kv_of_head)
    scores = torch.einsum("qhd,khd->hqk", q.double(), k) * scale
    pos_q = torch.arange(lk - lq, lk).unsqueeze(1)
    scores = scores.masked_fill(torch.arange(lk).unsqueeze(0) > pos_q, float("-inf"))
    return torch.einsum("hqk,khd->qhd", torch.softmax(scores, -1), v), torch.logsumexp(scores, -1)


def paged(seqs, block_size, gen, spare_blocks=3, pad_rows=0):
    """Scatter per-sequence [L,Hk,D] tensors into a shuffled paged cache.

    Unused blocks hold large garbage so reading a wrong block cannot pass.
    Returns (cache [N,block_size,Hk,D], block_table [B+pad_rows, max_blocks])."""
    counts = [-(-s.shape[0] // block_size) for s in seqs]
    total = sum(counts) + spare_blocks
    cache = 1e3 * torch.randn(total, block_size, *seqs[0].shape[1:], generator=gen)
    order = torch.randperm(total, generator=gen).tolist()
    table = torch.full((len(seqs) + pad_rows, max(counts) + 1), -1, dtype=torch.int32)
    for b, (seq, n) in enumerate(zip(seqs, counts)):
        ids, order = order[:n], order[n:]
        table[b, :n] = torch.tensor(ids, dtype=torch.int32)
        for i, block in enumerate(ids):
            chunk = seq[i * block_size : (i + 1) * block_size]
            cache[block, : chunk.shape[0]] = chunk
    return cache, table


def cu(lengths):
    return torch.tensor([0] + torch.tensor(lengths).cumsum(0).tolist(), dtype=torch.int32)


def make_batch(q_lens, k_lens, heads, kv_heads, dim, gen, dtype=torch.float32):
    qs = [torch.randn(lq, heads, dim, generator=gen, dtype=dtype) for lq in q_lens]
    ks = [torch.randn(lk, kv_heads, dim, generator=gen, dtype=dtype) for lk in k_lens]
    vs = [torch.randn(lk, kv_heads, dim, generator=gen, dtype=dtype) for lk in k_lens]
    return qs, ks, vs


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1234)


def test_varlen_packed_prefill(gen):
    lens = [5, 1, 7, 3]
    qs, ks, vs = make_batch(lens, lens, 4, 4, 16, gen)
    out = flash_attn_varlen_func(
        torch.cat(qs), torch.cat(ks), torch.cat(vs), cu(lens), cu(lens), 7, 7, causal=True
    )
    assert out.dtype == torch.float32 and out.shape == (16, 4, 16)
    ref = torch.cat([oracle(q, k, v)[0] for q, k, v in zip(qs, ks, vs)])
    torch.testing.assert_close(out.double(), ref, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("kv_heads", [6, 2, 1])  # MHA, GQA, MQA
def test_varlen_paged_prefill_as_megatron_calls_it(gen, kv_heads):
    """Paged prefill with shuffled blocks, a length-1 sequence, padded token
    rows after the last sequence and a padded (zero-length, -1 block) request."""
    lens = [9, 1, 4, 13]
    qs, ks, vs = make_batch(lens, lens, 6, kv_heads, 8, gen)
    k_cache, v_cache, table = paged_pair(ks, vs, 4, seed=1, pad_rows=1)
    q = torch.cat(qs + [torch.randn(3, 6, 8, generator=gen)])  # 3 padded token rows
    cu_q = torch.cat([cu(lens), cu(lens)[-1:]])  # padded request: cumulative repeated
    scale = 0.3
    out = flash_attn_varlen_func(
        q, k_cache, v_cache, cu_q, cu_q, 27, 64,
        softmax_scale=scale, causal=True, window_size=(-1, -1), block_table=table,
    )
    ref = torch.cat([oracle(q_, k, v, scale)[0] for q_, k, v in zip(qs, ks, vs)])
    torch.testing.assert_close(out[:27].double(), ref, atol=ATOL, rtol=RTOL)
    assert torch.all(out[27:] == 0)


def paged_pair(ks, vs, block_size, seed, pad_rows=0):
    """k and v caches sharing one (shuffled) block table."""
    k_cache, table = paged(ks, block_size, torch.Generator().manual_seed(seed), pad_rows=pad_rows)
    v_cache, table_v = paged(vs, block_size, torch.Generator().manual_seed(seed), pad_rows=pad_rows)
    assert torch.equal(table, table_v)
    return k_cache, v_cache, table


def test_varlen_mixed_decode_prefill_and_chunked_prefill(gen):
    """One varlen call holding a decode request (1 query over 10 keys), a fresh
    prefill and a chunked-prefill continuation (3 queries over 11 keys)."""
    q_lens, k_lens = [1, 6, 3, 1], [10, 6, 11, 1]
    qs, ks, vs = make_batch(q_lens, k_lens, 4, 2, 8, gen)
    k_cache, v_cache, table = paged_pair(ks, vs, 4, seed=7)
    out, lse, probs = flash_attn_varlen_func(
        torch.cat(qs), k_cache, v_cache, cu(q_lens), cu(k_lens), 6, 11,
        causal=True, block_table=table, return_attn_probs=True,
    )
    refs = [oracle(q, k, v) for q, k, v in zip(qs, ks, vs)]
    torch.testing.assert_close(out.double(), torch.cat([r[0] for r in refs]), atol=ATOL, rtol=RTOL)
    assert lse.shape == (4, 11) and probs is None
    torch.testing.assert_close(lse.double(), torch.cat([r[1] for r in refs], 1), atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("release", ["0.16.1", "0.19.2"])
def test_decode_only_paged_kvcache(gen, release):
    """Decode step: q [B,1,H,D], shuffled paged cache, GQA, one padded request
    (cache_seqlens 0, block row all -1) whose output must be zero."""
    k_lens = [1, 5, 8, 17]
    qs, ks, vs = make_batch([1] * 4, k_lens, 8, 2, 16, gen)
    k_cache, v_cache, table = paged_pair(ks, vs, 4, seed=3, pad_rows=1)
    q = torch.stack(qs + [torch.randn(1, 8, 16, generator=gen)])
    seqlens = torch.tensor(k_lens + [0], dtype=torch.int32)
    kwargs = dict(q=q, k_cache=k_cache, v_cache=v_cache, cache_seqlens=seqlens,
                  causal=True, block_table=table, num_splits=0)
    if release == "0.19.2":
        kwargs.update(softmax_scale=16**-0.5, window_size=(-1, -1))
    out = flash_attn_with_kvcache(**kwargs)
    assert out.shape == (5, 1, 8, 16)
    ref = torch.stack([oracle(q_, k, v)[0] for q_, k, v in zip(qs, ks, vs)])
    torch.testing.assert_close(out[:4].double(), ref, atol=ATOL, rtol=RTOL)
    assert torch.all(out[4] == 0)


def test_speculative_decode_multi_token_kvcache(gen):
    """0.19.2 speculative decoding: q [B,S,H,D] with S>1, causal bottom-right."""
    k_lens = [3, 9]
    qs, ks, vs = make_batch([3, 3], k_lens, 4, 4, 8, gen)
    k_cache, v_cache, table = paged_pair(ks, vs, 2, seed=11)
    out, lse = flash_attn_with_kvcache(
        torch.stack(qs), k_cache, v_cache, cache_seqlens=torch.tensor(k_lens, dtype=torch.int32),
        block_table=table, causal=True, return_softmax_lse=True,
    )
    refs = [oracle(q, k, v) for q, k, v in zip(qs, ks, vs)]
    torch.testing.assert_close(out.double(), torch.stack([r[0] for r in refs]), atol=ATOL, rtol=RTOL)
    assert lse.shape == (2, 4, 3)
    torch.testing.assert_close(lse.double(), torch.stack([r[1] for r in refs]), atol=ATOL, rtol=RTOL)


def test_dense_kvcache_and_int_seqlens(gen):
    qs, ks, vs = make_batch([1, 1], [6, 6], 2, 2, 4, gen)
    k_cache = torch.stack([torch.cat([k, torch.randn(2, 2, 4)]) for k in ks])  # S_max = 8
    v_cache = torch.stack([torch.cat([v, torch.randn(2, 2, 4)]) for v in vs])
    out = flash_attn_with_kvcache(torch.stack(qs), k_cache, v_cache, cache_seqlens=6, causal=True)
    ref = torch.stack([oracle(q, k, v)[0] for q, k, v in zip(qs, ks, vs)])
    torch.testing.assert_close(out.double(), ref, atol=ATOL, rtol=RTOL)


def test_bf16_keeps_dtype_and_is_close(gen):
    lens = [7, 2]
    qs, ks, vs = make_batch(lens, lens, 4, 2, 32, gen, dtype=torch.bfloat16)
    k_cache, v_cache, table = paged_pair(ks, vs, 4, seed=5)
    k_cache, v_cache = k_cache.bfloat16(), v_cache.bfloat16()
    out = flash_attn_varlen_func(
        torch.cat(qs), k_cache, v_cache, cu(lens), cu(lens), 7, 7, causal=True, block_table=table
    )
    assert out.dtype == torch.bfloat16
    ref = torch.cat([oracle(q, k, v)[0] for q, k, v in zip(qs, ks, vs)])
    torch.testing.assert_close(out.double(), ref, atol=1e-2, rtol=1e-2)  # one bf16 rounding


def test_rows_with_no_visible_key_are_zero_like_fa2(gen):
    """More queries than keys: causal (bottom-right) hides every key from the
    first queries; FA2 returns 0 for them (and +inf lse), never NaN."""
    q, k = torch.randn(4, 2, 4, generator=gen), torch.randn(2, 2, 4, generator=gen)
    out, lse, _ = flash_attn_varlen_func(
        q, k, k, cu([4]), cu([2]), 4, 2, causal=True, return_attn_probs=True
    )
    assert torch.all(out[:2] == 0) and torch.all(lse[:, :2] == float("inf"))
    torch.testing.assert_close(out[2:].double(), oracle(q[2:], k, k)[0], atol=ATOL, rtol=RTOL)


def test_padding_rows_are_skipped_with_fa2s_values(gen):
    """megatron pads a decode batch to its request slots (60 of 64 rows empty in the seed's decode):
    rows with no key cost nothing and give what attending to no key gives, zero output and +inf lse;
    the real rows are unchanged by the padding around them."""
    k_lens = [4, 9]
    qs, ks, vs = make_batch([1, 1], k_lens, 4, 2, 8, gen)
    k_cache, v_cache, table = paged_pair(ks, vs, 4, seed=7, pad_rows=3)
    q = torch.stack([qs[0], torch.randn(1, 4, 8, generator=gen), qs[1], torch.randn(1, 4, 8, generator=gen),
                     torch.randn(1, 4, 8, generator=gen)])
    rows = torch.tensor([0, 3, 1, 4, 2])  # real rows 0 and 2 of q; table rows 3, 4 are padding (all -1)
    table = table[rows]
    seqlens = torch.tensor([4, 0, 9, 0, 0], dtype=torch.int32)
    out, lse = flash_attn_with_kvcache(q, k_cache, v_cache, cache_seqlens=seqlens, block_table=table, causal=True,
                                       return_softmax_lse=True)
    alone, alone_lse = flash_attn_with_kvcache(q[[0, 2]], k_cache, v_cache, cache_seqlens=seqlens[[0, 2]],
                                               block_table=table[[0, 2]], causal=True, return_softmax_lse=True)
    assert torch.equal(out[[0, 2]], alone) and torch.equal(lse[[0, 2]], alone_lse)
    assert torch.all(out[[1, 3, 4]] == 0) and torch.all(lse[[1, 3, 4]] == float("inf"))
    packed, packed_lse, _ = flash_attn_varlen_func(
        torch.cat([qs[0], qs[1]]), k_cache, v_cache, cu([1, 0, 1]), cu([4, 0, 9]), 1, 9, causal=True,
        block_table=table[[0, 1, 2]], return_attn_probs=True)
    assert torch.equal(packed, alone[:, 0]) and torch.equal(packed_lse, alone_lse[:, :, 0].T)


@pytest.mark.parametrize(
    "option",
    [
        dict(dropout_p=0.1),
        dict(window_size=(4, 0)),
        dict(softcap=30.0),
        dict(alibi_slopes=torch.ones(2)),
    ],
)
def test_varlen_rejects_unsupported(gen, option):
    q = torch.randn(3, 2, 4)
    with pytest.raises(NotImplementedError, match=next(iter(option))):
        flash_attn_varlen_func(q, q, q, cu([3]), cu([3]), 3, 3, causal=True, **option)


@pytest.mark.parametrize("option", ["k", "v", "rotary_cos", "rotary_sin", "cache_batch_idx"])
def test_kvcache_rejects_append_and_rotary(option):
    q = torch.randn(1, 1, 2, 4)
    with pytest.raises(NotImplementedError, match=option):
        flash_attn_with_kvcache(q, q, q, cache_seqlens=1, **{option: torch.zeros(1)})


def test_missing_block_is_an_error_not_a_wraparound(gen):
    q = torch.randn(1, 1, 2, 4)
    cache = torch.randn(3, 2, 2, 4)
    table = torch.tensor([[0, -1]], dtype=torch.int32)  # length 3 needs two blocks
    with pytest.raises(ValueError, match="invalid block ids"):
        flash_attn_with_kvcache(q, cache, cache, cache_seqlens=torch.tensor([3]), block_table=table)


def _flash_attn_importable():
    try:
        import flash_attn  # noqa: F401

        return True
    except Exception:
        return False


@pytest.mark.skipif(_flash_attn_importable(), reason="real flash_attn present: install() is a no-op")
def test_install_patches_only_missing_names():
    def real_version_check(version, check_equality=True):
        raise ImportError("No module named 'flash_attn'")

    keep = object()
    module = types.SimpleNamespace(
        flash_attn_varlen_func=None,
        flash_attn_with_kvcache=None,
        is_fa_min_version=real_version_check,
        flash_attn3_with_kvcache=keep,
        HAVE_FA3=False,
    )
    applied = cpu_attention.install(module)
    assert [a.split(" ->")[0] for a in applied] == [
        "flash_attn_varlen_func", "flash_attn_with_kvcache", "is_fa_min_version"
    ]
    assert module.flash_attn_varlen_func is flash_attn_varlen_func
    assert module.flash_attn_with_kvcache is flash_attn_with_kvcache
    assert module.is_fa_min_version("2.7.3") is True
    assert module.is_fa_min_version("3.0.0") is False
    assert module.flash_attn3_with_kvcache is keep and module.HAVE_FA3 is False
    assert cpu_attention.install(module) == []  # idempotent


@pytest.mark.skipif(_flash_attn_importable(), reason="real flash_attn present: install() is a no-op")
def test_install_leaves_present_kernels_alone():
    real = object()
    module = types.SimpleNamespace(
        flash_attn_varlen_func=real, flash_attn_with_kvcache=real, is_fa_min_version=real
    )
    assert cpu_attention.install(module) == []
    assert module.flash_attn_varlen_func is real and module.is_fa_min_version is real
