"""Writes a synthetic checkpoint: ``python -m logitsmatch.rank.weights_writer SPEC.json OUT_DIR``.

Builds the TP1 model of the spec's architecture in one gloo process, fills
every parameter from ``run.synthetic_weights.parameter_values`` (numpy, so the
values do not depend on torch or megatron-core) and saves it with
``dist_checkpointing`` as Megatron training would. ``run.synthetic_weights``
starts it and caches the result.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

from logitsmatch.lifetime import die_with_parent
from logitsmatch.run.synthetic_weights import GENERATOR_VERSION, parameter_values, weights_digest

# Parameters megatron-core renamed without changing them: the value is drawn under the older name, so every
# release's synthetic model is the same model (0.17 made the Mamba mixer's conv1d module two parameters).
RENAMED = {".mixer.conv1d_weight": ".mixer.conv1d.weight", ".mixer.conv1d_bias": ".mixer.conv1d.bias"}


def drawn_name(name: str) -> str:
    """The name a parameter's synthetic value is drawn (and digested) under."""
    for newer, older in RENAMED.items():
        if name.endswith(newer):
            return name[: -len(newer)] + older
    return name


def write_checkpoint(spec: dict, out_dir: Path) -> str:
    """Build the TP1 model, fill it from numpy, save it; return the weights digest."""
    import torch

    from logitsmatch.rank.checkpoint import save_checkpoint, single_process_model

    arch = spec["architecture"]
    model = single_process_model(arch, spec["vocab_size"])
    named_arrays = []
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("_extra_state"):
                continue
            drawn_as = drawn_name(name)
            values = parameter_values(
                drawn_as, tuple(tensor.shape), spec["seed"], arch["num_layers"], spec["num_special_tokens"]
            )
            tensor.copy_(torch.from_numpy(values))
            named_arrays.append((drawn_as, values))
    digest = weights_digest(named_arrays)
    save_checkpoint(model, arch, spec["vocab_size"], out_dir)
    (out_dir / "logitsmatch_synthetic.json").write_text(
        json.dumps({**spec, "generator_version": GENERATOR_VERSION, "weights_sha256": digest}, indent=2)
    )
    torch.distributed.destroy_process_group()
    return digest


def main(argv: list[str]) -> int:
    die_with_parent(sig=signal.SIGKILL)  # nothing to clean up: the caller discards the staging folder
    spec_path, out_dir = argv
    write_checkpoint(json.loads(Path(spec_path).read_text()), Path(out_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
