"""logitsmatch.rank.cpu_mamba against a plain reference: a per-timestep SSM recurrence and a direct
convolution loop, in float64, written here from the Mamba-2 definitions.

The call shapes mirror megatron-core 0.16's MambaMixer: varlen prefill (one row, ``seq_idx`` and
``cu_seqlens``), chunked prefill (``initial_states``), and the decode step whose state must carry
on from the prefill token by token.
"""

from __future__ import annotations

import sys

import pytest

from support import require_toolchain_module

torch = require_toolchain_module("torch")

from logitsmatch.rank import cpu_mamba  # noqa: E402
from support.mamba_reference import ATOL, RTOL, random_inputs, reference_conv, reference_scan  # noqa: E402

SHAPES = [  # (sequence lengths, heads, headdim, groups, d_state, chunk_size)
    ([7], 2, 4, 1, 8, 4),
    ([5, 1, 12], 4, 3, 2, 6, 4),
    ([9, 16], 8, 2, 8, 4, 8),
    ([33], 4, 8, 2, 16, 16),
]


@pytest.mark.parametrize("lengths, heads, headdim, groups, d_state, chunk", SHAPES)
def test_chunk_scan_equals_the_recurrence_per_sequence_with_varlen_states(lengths, heads, headdim, groups, d_state,
                                                                          chunk):
    """Packed varlen prefill: each sequence restarts from a zero state; its final state is returned."""
    generator = torch.Generator().manual_seed(sum(lengths) * heads)
    total = sum(lengths)
    inputs = random_inputs(generator, total, heads, headdim, groups, d_state)
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    seq_idx = torch.repeat_interleave(torch.arange(len(lengths), dtype=torch.int32), torch.tensor(lengths))[None]
    y, final, varlen = cpu_mamba.mamba_chunk_scan_combined(
        inputs["x"][None], inputs["dt"][None], inputs["A"], inputs["B"][None], inputs["C"][None], chunk,
        D=inputs["D"], z=inputs["z"][None], dt_bias=inputs["dt_bias"], dt_softplus=True, seq_idx=seq_idx,
        cu_seqlens=cu, return_final_states=True, return_varlen_states=True)
    step = torch.nn.functional.softplus(inputs["dt"] + inputs["dt_bias"])
    for index, (start, end) in enumerate(zip(cu[:-1].tolist(), cu[1:].tolist())):
        part = slice(start, end)
        expected_y, expected_state = reference_scan(inputs["x"][part], step[part], inputs["A"], inputs["B"][part],
                                                    inputs["C"][part], inputs["D"], inputs["z"][part])
        torch.testing.assert_close(y[0, part].double(), expected_y, atol=ATOL, rtol=RTOL)
        torch.testing.assert_close(varlen[index].double(), expected_state, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(final[0].double(), varlen[-1].double())


@pytest.mark.parametrize("lengths, heads, headdim, groups, d_state, chunk", SHAPES)
def test_chunked_prefill_continues_from_initial_states(lengths, heads, headdim, groups, d_state, chunk):
    """A prompt scanned in two pieces, the second from the first's final state, equals the whole scan."""
    generator = torch.Generator().manual_seed(7 + heads)
    total = sum(lengths)
    inputs = random_inputs(generator, total, heads, headdim, groups, d_state)
    split = max(1, total // 3)

    def scan(part, initial=None):
        return cpu_mamba.mamba_chunk_scan_combined(
            inputs["x"][None, part], inputs["dt"][None, part], inputs["A"], inputs["B"][None, part],
            inputs["C"][None, part], chunk, D=inputs["D"], z=inputs["z"][None, part], dt_bias=inputs["dt_bias"],
            dt_softplus=True, initial_states=initial, return_final_states=True)

    first, state = scan(slice(0, split))
    second, final = scan(slice(split, total), state)
    step = torch.nn.functional.softplus(inputs["dt"] + inputs["dt_bias"])
    expected_y, expected_state = reference_scan(inputs["x"], step, inputs["A"], inputs["B"], inputs["C"],
                                                inputs["D"], inputs["z"])
    torch.testing.assert_close(torch.cat([first, second], 1)[0].double(), expected_y, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(final[0].double(), expected_state, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("lengths, width", [([6], 4), ([3, 1, 8], 4), ([2, 5], 2), ([11], 3)])
def test_causal_conv_equals_the_direct_loop_within_each_sequence(lengths, width):
    generator = torch.Generator().manual_seed(len(lengths) * width)
    dim, total = 5, sum(lengths)
    x, weight, bias = (torch.randn(dim, total, generator=generator), torch.randn(dim, width, generator=generator),
                       torch.randn(dim, generator=generator))
    starts = [0, *torch.tensor(lengths).cumsum(0).tolist()[:-1]]
    seq_idx = torch.repeat_interleave(torch.arange(len(lengths), dtype=torch.int32), torch.tensor(lengths))[None]
    out = cpu_mamba.causal_conv1d_fn(x[None], weight, bias, seq_idx=seq_idx, activation="silu")
    torch.testing.assert_close(out[0].double(), reference_conv(x, weight, bias, starts), atol=ATOL, rtol=RTOL)
    history = torch.randn(dim, width - 1, generator=generator)
    out = cpu_mamba.causal_conv1d_fn(x[None], weight, bias, initial_states=history[None], activation="silu")
    torch.testing.assert_close(out[0].double(), reference_conv(x, weight, bias, [0], history=history),
                               atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("state_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("prompt, generated, heads, headdim, groups, d_state", [
    (5, 4, 2, 4, 1, 8), (1, 6, 4, 2, 2, 4), (9, 3, 8, 2, 4, 16)])
def test_decode_steps_carry_on_from_the_prefill_token_by_token(prompt, generated, heads, headdim, groups, d_state,
                                                                state_dtype):
    """Prefill the prompt (conv via varlen states, SSM via varlen final state), then decode one token at a
    time with conv_state / ssm_state in slot 2 of a 3-slot cache: each step's output equals the whole
    sequence's reference at that position. bf16 states round each stored state, so a looser tolerance."""
    generator = torch.Generator().manual_seed(prompt * 31 + generated)
    width, total = 4, prompt + generated
    conv_dim = heads * headdim + 2 * groups * d_state
    weight, bias = torch.randn(conv_dim, width, generator=generator), torch.randn(conv_dim, generator=generator)
    xBC = torch.randn(total, conv_dim, generator=generator)
    scan_inputs = random_inputs(generator, total, heads, headdim, groups, d_state)
    A, D, dt_bias = scan_inputs["A"], scan_inputs["D"], scan_inputs["dt_bias"]

    def split(conv_out):  # [l, conv_dim] -> x [l, h, p], B, C [l, g, s]
        x, B, C = torch.split(conv_out, [heads * headdim, groups * d_state, groups * d_state], dim=-1)
        return x.reshape(-1, heads, headdim), B.reshape(-1, groups, d_state), C.reshape(-1, groups, d_state)

    conv_reference = reference_conv(xBC.T, weight, bias, [0]).T.float()
    x_all, B_all, C_all = split(conv_reference)
    step = torch.nn.functional.softplus(scan_inputs["dt"] + dt_bias)
    expected, _ = reference_scan(x_all, step, A, B_all, C_all, D, scan_inputs["z"])

    slot = torch.tensor([2], dtype=torch.int32)
    conv_state = torch.zeros(3, conv_dim, width, dtype=state_dtype)
    ssm_state = torch.zeros(3, heads, headdim, d_state, dtype=state_dtype)
    cu = torch.tensor([0, prompt], dtype=torch.int32)
    cpu_mamba.tensor_masked_update(conv_state, slot, cpu_mamba.causal_conv1d_varlen_states(xBC[:prompt], cu, width))
    x, B, C = split(cpu_mamba.causal_conv1d_fn(xBC[None, :prompt].transpose(1, 2), weight, bias,
                                               seq_idx=torch.zeros(1, prompt, dtype=torch.int32),
                                               activation="silu")[0].T)
    y, _, varlen = cpu_mamba.mamba_chunk_scan_combined(
        x[None], scan_inputs["dt"][None, :prompt], A, B[None], C[None], 4, D=D, z=scan_inputs["z"][None, :prompt],
        dt_bias=dt_bias, dt_softplus=True, seq_idx=torch.zeros(1, prompt, dtype=torch.int32), cu_seqlens=cu,
        return_final_states=True, return_varlen_states=True)
    cpu_mamba.tensor_masked_update(ssm_state, slot, varlen)
    tolerance = dict(atol=ATOL, rtol=RTOL) if state_dtype == torch.float32 else dict(atol=0.1, rtol=0.05)
    torch.testing.assert_close(y[0].double(), expected[:prompt], atol=ATOL, rtol=RTOL)
    for t in range(prompt, total):
        conv_out = cpu_mamba.causal_conv1d_update(xBC[t][None], conv_state, weight, bias, "silu",
                                                  conv_state_indices=slot)
        torch.testing.assert_close(conv_out[0].double(), conv_reference[t].double(), **tolerance)
        x, B, C = split(conv_out)
        y = cpu_mamba.selective_state_update(
            ssm_state, x, scan_inputs["dt"][t][None, :, None].expand(1, heads, headdim),
            A[:, None, None].expand(heads, headdim, d_state), B, C, D, z=scan_inputs["z"][t][None],
            dt_bias=dt_bias[:, None].expand(heads, headdim), dt_softplus=True, state_batch_indices=slot)
        torch.testing.assert_close(y[0].double(), expected[t], **tolerance)
    assert not conv_state[:2].any() and not ssm_state[:2].any(), "only the request's slot is written"


def test_padding_slots_are_neither_read_nor_written():
    """A state index of -1 (megatron's padding slot) leaves every state as it was and yields zeros."""
    state = torch.randn(2, 1, 2, 3)
    before = state.clone()
    y = cpu_mamba.selective_state_update(state, torch.ones(1, 1, 2), torch.ones(1, 1, 2), -torch.ones(1, 2, 3),
                                         torch.ones(1, 1, 3), torch.ones(1, 1, 3),
                                         state_batch_indices=torch.tensor([-1]))
    assert torch.equal(state, before) and not y.any()
    conv_state = torch.randn(2, 3, 4)
    conv_before = conv_state.clone()
    out = cpu_mamba.causal_conv1d_update(torch.ones(1, 3), conv_state, torch.ones(3, 4),
                                         conv_state_indices=torch.tensor([-1], dtype=torch.int32))
    assert torch.equal(conv_state, conv_before) and not out.any()


def test_gated_rmsnorm_normalises_each_group_after_the_gate():
    generator = torch.Generator().manual_seed(3)
    x, z = torch.randn(4, 12, generator=generator), torch.randn(4, 12, generator=generator)
    norm = cpu_mamba.RMSNormGated(12, eps=1e-5, group_size=4, norm_before_gate=False)
    norm.weight.data = torch.randn(12, generator=generator)
    gated = (x * torch.nn.functional.silu(z)).double().reshape(4, 3, 4)
    expected = (gated / torch.sqrt((gated**2).mean(-1, keepdim=True) + 1e-5)).reshape(4, 12) * norm.weight.double()
    torch.testing.assert_close(norm(x, z).double(), expected, atol=ATOL, rtol=RTOL)


def test_tensor_ops_copy_merge_and_masked_update_rows():
    rows = torch.arange(12.0).reshape(6, 2)
    tail = torch.zeros(6, 2)
    cpu_mamba.tensor_get_slice_after(rows, tail, torch.tensor([2]))
    assert torch.equal(tail[:4], rows[2:])
    merged = torch.empty(6, 2)
    cpu_mamba.tensor_merge(rows[:2], -rows[:4], torch.tensor([2]), output_tensor=merged)
    assert torch.equal(merged[:2], rows[:2]) and torch.equal(merged[2:], -rows[:4])
    states = torch.zeros(4, 2)
    cpu_mamba.tensor_masked_update(states, torch.tensor([3, -1, 0]), torch.ones(3, 2) * torch.tensor([[1.0], [2], [3]]))
    assert states[:, 0].tolist() == [3.0, 0.0, 0.0, 1.0]


def test_install_serves_megatron_s_import_paths(monkeypatch):
    """megatron-core imports these names inside try blocks: each must resolve, with the emulated versions."""
    for name in list(sys.modules):
        if name.split(".")[0] in ("mamba_ssm", "causal_conv1d"):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for name, module in cpu_mamba.standin_modules().items():
        monkeypatch.setitem(sys.modules, name, module)
    import causal_conv1d
    import mamba_ssm
    from causal_conv1d import causal_conv1d_fn, causal_conv1d_update  # noqa: F401
    from causal_conv1d.causal_conv1d_varlen import causal_conv1d_varlen_states  # noqa: F401
    from mamba_ssm.ops.triton.layernorm_gated import RMSNorm  # noqa: F401
    from mamba_ssm.ops.triton.selective_state_update import selective_state_update  # noqa: F401
    from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined, mamba_split_conv1d_scan_combined  # noqa: F401

    assert mamba_ssm.__version__ == cpu_mamba.EMULATED_MAMBA_SSM_VERSION
    assert causal_conv1d.__version__ == cpu_mamba.EMULATED_CAUSAL_CONV1D_VERSION
