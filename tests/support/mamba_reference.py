"""A plain reference for the Mamba-2 kernels, in float64: a per-timestep SSM recurrence and a direct convolution
loop, written from the definitions (tests/rank/test_cpu_mamba*.py hold logitsmatch.rank's stand-ins against it).
Import it after torch is known to be there (support.require_toolchain_module)."""

from __future__ import annotations

import torch

ATOL = RTOL = 2e-5  # float32 kernels against a float64 reference


def reference_conv(x, weight, bias, starts, activation=True, history=None):
    """out[d, t] = bias[d] + sum_k weight[d, k] * x[d, t - (w-1) + k] over tokens of t's own sequence
    (``starts``: the first token of each sequence); ``history`` [d, w-1] precedes token 0."""
    dim, length = x.shape
    width = weight.shape[-1]
    out = torch.zeros(dim, length, dtype=torch.float64)
    owner = torch.zeros(length, dtype=torch.long)
    for start in starts[1:]:
        owner[start:] += 1
    for t in range(length):
        for k in range(width):
            source = t - (width - 1) + k
            if source >= 0 and owner[source] == owner[t]:
                out[:, t] += weight[:, k].double() * x[:, source].double()
            elif source < 0 and history is not None:
                out[:, t] += weight[:, k].double() * history[:, width - 1 + source].double()
        out[:, t] += bias.double()
    return torch.nn.functional.silu(out) if activation else out


def reference_scan(x, dt, A, B, C, D, z, state=None):
    """The SSM one token at a time: h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T, y_t = C_t h_t + D x_t,
    gated by silu(z_t). x, z [l, h, p]; dt [l, h] (already softplus'd); A [h]; B, C [l, g, s]; D [h, p]."""
    length, heads, headdim = x.shape
    groups = B.shape[1]
    state = torch.zeros(heads, headdim, B.shape[-1], dtype=torch.float64) if state is None else state.double()
    ys = []
    for t in range(length):
        for h in range(heads):
            g = h // (heads // groups)
            decay = torch.exp(dt[t, h].double() * A[h].double())
            state[h] = decay * state[h] + dt[t, h].double() * torch.outer(x[t, h].double(), B[t, g].double())
        y = torch.stack([state[h] @ C[t, h // (heads // groups)].double() for h in range(heads)])
        y = y + D.double() * x[t].double()
        ys.append(y * torch.nn.functional.silu(z[t].double()))
    return torch.stack(ys), state


def random_inputs(generator, length, heads, headdim, groups, d_state):
    def draw(*shape):
        return torch.randn(*shape, generator=generator)

    return dict(x=draw(length, heads, headdim), dt=draw(length, heads) * 0.5,
                A=-torch.rand(heads, generator=generator) - 0.2,
                B=draw(length, groups, d_state), C=draw(length, groups, d_state), D=draw(heads, headdim),
                z=draw(length, heads, headdim), dt_bias=draw(heads) * 0.1)
