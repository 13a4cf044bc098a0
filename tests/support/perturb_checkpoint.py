"""Copy a torch_dist checkpoint with one weight changed (run in a toolchain venv).

Run as a script, its folder comes first on sys.path: no module here may share a name with a package it
imports (megatron, torch).

    python tests/support/perturb_checkpoint.py SRC OUT PARAMETER FLAT_INDEX DELTA

Loads SRC through logitsmatch's own loader at TP1, adds DELTA to one element
and saves the result as a Megatron-layout checkpoint in OUT.
"""

import sys
from pathlib import Path

import torch

from logitsmatch.checkpoint_args import architecture_from_args, resolve_checkpoint_dir
from logitsmatch.rank.checkpoint import load_model_weights, read_checkpoint_args, save_checkpoint, single_process_model


def main(source: str, out: str, parameter: str, flat_index: str, delta: str) -> None:
    directory = resolve_checkpoint_dir(source)
    args = read_checkpoint_args(directory)
    arch = architecture_from_args(args)
    model = single_process_model(arch, args.padded_vocab_size)
    load_model_weights(model, directory)
    with torch.no_grad():
        model.state_dict()[parameter].view(-1)[int(flat_index)] += float(delta)
    save_checkpoint(model, arch, args.padded_vocab_size, Path(out))
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
