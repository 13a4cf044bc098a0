"""logitsmatch.rank.cpu_mamba_ops (megatron-core 0.17+'s own SSM op signatures) against the float64 reference
recurrence and convolution loop of test_cpu_mamba: packed sequences each continuing from its own initial state,
the chunk-end states megatron gathers for prefix caching, and the [batch, token, ...] decode layout."""

from __future__ import annotations

import pytest

from support import require_toolchain_module

torch = require_toolchain_module("torch")

from logitsmatch.rank import cpu_mamba_ops  # noqa: E402
from support.mamba_reference import ATOL, RTOL, random_inputs, reference_conv, reference_scan  # noqa: E402


def chunk_metadata(lengths: list[int], chunk: int):
    """megatron's varlen chunk metadata: chunk boundaries restart at each sequence (cu_chunk_seqlens), the last
    chunk of each sequence (last_chunk_indices) and each chunk's sequence (seq_idx)."""
    boundaries, last, owner, start = [0], [], [], 0
    for index, length in enumerate(lengths):
        for position in range(start + chunk, start + length, chunk):
            boundaries.append(position)
            owner.append(index)
        boundaries.append(start + length)
        owner.append(index)
        last.append(len(boundaries) - 2)
        start += length
    return torch.tensor(boundaries), torch.tensor(last), torch.tensor(owner)


@pytest.mark.parametrize("lengths, heads, headdim, groups, d_state, chunk", [
    ([7, 3], 2, 4, 1, 8, 4), ([9, 1, 13], 4, 2, 2, 4, 4), ([16], 8, 2, 4, 6, 8)])
def test_varlen_scan_continues_each_sequence_from_its_state_and_keeps_chunk_end_states(
        lengths, heads, headdim, groups, d_state, chunk):
    generator = torch.Generator().manual_seed(sum(lengths) + heads)
    total = sum(lengths)
    inputs = random_inputs(generator, total, heads, headdim, groups, d_state)
    initial = torch.randn(len(lengths), heads, headdim, d_state, generator=generator)
    cu_chunks, last, owner = chunk_metadata(lengths, chunk)
    out = torch.zeros(total, heads, headdim)
    wanted = torch.arange(len(cu_chunks) - 1).flip(0)  # every chunk end, in another order
    finals, ends = cpu_mamba_ops.mamba_chunk_scan_combined_varlen(
        inputs["x"], inputs["dt"], inputs["A"], inputs["B"], inputs["C"], chunk, cu_chunks, last, owner, out,
        D=inputs["D"], z=inputs["z"], dt_bias=inputs["dt_bias"], initial_states=initial, dt_softplus=True,
        intermediate_chunk_indices=wanted)
    step = torch.nn.functional.softplus(inputs["dt"] + inputs["dt_bias"])
    start, expected_ends = 0, {}
    for index, length in enumerate(lengths):
        part = slice(start, start + length)
        expected_y, expected_state = reference_scan(inputs["x"][part], step[part], inputs["A"], inputs["B"][part],
                                                    inputs["C"][part], inputs["D"], inputs["z"][part], initial[index])
        torch.testing.assert_close(out[part].double(), expected_y, atol=ATOL, rtol=RTOL)
        torch.testing.assert_close(finals[index].double(), expected_state, atol=ATOL, rtol=RTOL)
        for chunk_index in range(len(cu_chunks) - 1):
            end = int(cu_chunks[chunk_index + 1])
            if owner[chunk_index] == index:
                head = slice(start, end)
                expected_ends[chunk_index] = reference_scan(
                    inputs["x"][head], step[head], inputs["A"], inputs["B"][head], inputs["C"][head], inputs["D"],
                    inputs["z"][head], initial[index])[1]
        start += length
    for position, chunk_index in enumerate(wanted.tolist()):
        torch.testing.assert_close(ends[position].double(), expected_ends[chunk_index], atol=ATOL, rtol=RTOL)


def test_varlen_conv_continues_each_sequence_from_its_own_history():
    generator = torch.Generator().manual_seed(5)
    lengths, dim, width = [4, 1, 6], 3, 4
    x = torch.randn(sum(lengths) + 2, dim, generator=generator)  # two padding tokens after the last sequence
    weight, bias = torch.randn(dim, width, generator=generator), torch.randn(dim, generator=generator)
    history = torch.randn(len(lengths), dim, width - 1, generator=generator)
    cu = torch.tensor([0, 4, 5, 11], dtype=torch.int32)
    out = cpu_mamba_ops.causal_conv1d_varlen_fn(x, weight, bias, cu, initial_states=history)
    for index, (start, end) in enumerate(zip(cu[:-1].tolist(), cu[1:].tolist())):
        expected = reference_conv(x[start:end].T, weight, bias, [0], history=history[index]).T
        torch.testing.assert_close(out[start:end].double(), expected, atol=ATOL, rtol=RTOL)
    assert not out[11:].any()


def test_decode_takes_megatrons_token_dimension_and_refuses_speculative_tokens():
    generator = torch.Generator().manual_seed(9)
    conv_state = torch.randn(2, 3, 4, generator=generator)
    weight = torch.randn(3, 4, generator=generator)
    token = torch.randn(1, 1, 3, generator=generator)
    reference_state = conv_state.clone()
    expected = torch.nn.functional.silu(
        (torch.cat([reference_state[1, :, 1:], token[0].T], -1) * weight).sum(-1))
    out = cpu_mamba_ops.causal_conv1d_update(token, conv_state, weight, None, True, torch.tensor([1]))
    assert out.shape == (1, 1, 3)
    torch.testing.assert_close(out[0, 0], expected)
    assert torch.equal(conv_state[0], reference_state[0])
    with pytest.raises(NotImplementedError, match="speculative decoding"):
        cpu_mamba_ops.causal_conv1d_update(torch.randn(1, 2, 3), conv_state, weight, None, True, None)
    state = torch.zeros(1, 2, 1, 3)
    y = cpu_mamba_ops.selective_state_update(state, torch.ones(1, 1, 2, 1), torch.ones(1, 1, 2, 1),
                                             -torch.ones(2, 1, 3), torch.ones(1, 1, 1, 3), torch.ones(1, 1, 1, 3))
    assert y.shape == (1, 1, 2, 1) and state.any()
