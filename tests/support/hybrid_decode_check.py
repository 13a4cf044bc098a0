"""Run megatron-core's MambaModel (tiny_hybrid, synthetic weights) three ways and print the largest differences.

    python tests/support/hybrid_decode_check.py   (with torch and megatron-core 0.15/0.16 installed)

1. a whole-sequence forward without an inference context: the Mamba mixer's training path
   (``mamba_split_conv1d_scan_combined``);
2. a static-batching prefill of the prompt, then one token at a time: the mixer's inference path
   (``causal_conv1d_fn`` and ``mamba_chunk_scan_combined`` with the final states, then ``causal_conv1d_update``
   and ``selective_state_update`` continuing from them), with attention's KV cache beside it.
Prints JSON: whether rank.cpu_mamba served the kernels, the logits' largest magnitude, and the largest difference
of (2) from (1) at the prompt's last position and at each decoded position. Run as a subprocess: it initialises
torch.distributed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(PROJECT / "tools"))

from logitsmatch.rank import checkpoint, cpu_mamba  # noqa: E402
from logitsmatch.run.synthetic_weights import parameter_values  # noqa: E402
from logitsmatch.suites import load_architecture  # noqa: E402

VOCAB, PROMPT, TOTAL, SEED = 500, 5, 12, 1234


def main() -> int:
    import torch

    arch = load_architecture(PROJECT, "tiny_hybrid")
    model = checkpoint.single_process_model(arch, VOCAB)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not name.endswith("_extra_state"):
                tensor.copy_(torch.from_numpy(parameter_values(name, tuple(tensor.shape), SEED, arch["num_layers"], 0)))
    from megatron.core.inference.contexts import StaticInferenceContext

    tokens = torch.randint(0, VOCAB, (1, TOTAL), generator=torch.Generator().manual_seed(SEED))
    positions = torch.arange(TOTAL)[None]

    def causal(length):
        return torch.triu(torch.ones(length, length, dtype=torch.bool), 1)[None, None]

    context = StaticInferenceContext(1, 64)
    with torch.no_grad():
        whole = model(tokens, positions, causal(TOTAL))
        prefill = model(tokens[:, :PROMPT], positions[:, :PROMPT], causal(PROMPT), inference_context=context,
                        runtime_gather_output=True)
        context.sequence_len_offset += PROMPT
        decoded = []
        for position in range(PROMPT, TOTAL):
            step = model(tokens[:, position:position + 1], positions[:, position:position + 1], None,
                         inference_context=context, runtime_gather_output=True)
            context.sequence_len_offset += 1
            decoded.append(float((step[0, -1] - whole[0, position]).abs().max()))
    mixer = type(model.decoder.layers[0].mixer).__module__
    served = sys.modules["causal_conv1d"].causal_conv1d_fn is cpu_mamba.causal_conv1d_fn
    print(json.dumps({
        "mixer_module": mixer,
        "kernels_from_cpu_mamba": served,
        "logits_max": float(whole.abs().max()),
        "prefill_last": float((prefill[0, -1] - whole[0, PROMPT - 1]).abs().max()),
        "decoded": decoded,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
