"""Parallel layouts: how a run's ranks split the model, and what each megatron-core release can run.

A layout is TP x PP x DP for the dense layers, and EP x ETP for the experts of a MoE model.
Megatron-LM's functional tests always start ``GPUS_PER_NODE`` ranks (8;
``tests/functional_tests/shell_test_utils/_run_training.sh``) and megatron-core derives the
data-parallel size from them (``initialize_model_parallel``: DP = world / (TP x PP x CP)).
So a case's MODEL_ARGS give TP, PP, EP and ETP, and its DP is implicit: tp1_pp1_dp8 is
eight TP1 engines, tp2_pp2_dp2 two TP2 x PP2 engines, tp4_etp1_pp1_ep8 two TP4 engines whose
experts are spread over all eight ranks.

Names (``--layout``, ``logitsmatch invariance --layouts``) read ``tp2pp2dp2``: each of ``tp``,
``pp``, ``dp``, ``ep``, ``etp`` at most once with its size; omitted sizes are 1 (ETP: TP, as
Megatron's default). The canonical name leaves out what is 1 (``pp8``, ``dp8``; ``tp1`` when
everything is).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from logitsmatch.errors import BadInput

# Megatron-LM's functional tests start GPUS_PER_NODE ranks, 8 unless a case says otherwise; a
# suite's logitsmatch.yaml may set world_size.
DEFAULT_WORLD_SIZE = 8
_PART = re.compile(r"(etp|tp|pp|dp|ep)(\d+)")


@dataclass(frozen=True)
class Layout:
    tensor: int = 1
    pipeline: int = 1
    data: int = 1
    expert: int = 1
    expert_tensor: int | None = None  # None: the tensor-parallel size (Megatron's default)

    def __post_init__(self) -> None:
        if self.expert_tensor == self.tensor:  # one spelling per layout: equal layouts compare equal
            object.__setattr__(self, "expert_tensor", None)

    @property
    def etp(self) -> int:
        return self.tensor if self.expert_tensor is None else self.expert_tensor

    @property
    def world_size(self) -> int:
        return self.tensor * self.pipeline * self.data

    @property
    def name(self) -> str:
        parts = [("tp", self.tensor), ("pp", self.pipeline), ("dp", self.data), ("ep", self.expert)]
        text = "".join(f"{key}{size}" for key, size in parts if size != 1)
        if self.expert_tensor is not None and self.etp != self.tensor:
            text += f"etp{self.etp}"
        return text or "tp1"

    @property
    def experts_span_engines(self) -> bool:
        """Whether one expert-parallel group holds ranks of more than one data-parallel engine.

        Within a pipeline stage both grids number the same TP x DP ranks, TP (resp. ETP) fastest:
        an engine is TP consecutive ranks, an EP group EP ranks spaced ETP apart.
        """
        return self.expert > 1 and self.etp * self.expert > self.tensor

    def to_dict(self) -> dict:
        return {"tensor": self.tensor, "pipeline": self.pipeline, "data": self.data,
                "expert": self.expert, "expert_tensor": self.etp, "name": self.name}

    def check(self, arch: dict, where: str) -> None:
        """The model must split this way (BadInput naming what does not divide)."""
        problems = [f"{key}={arch[key]!r} must be a positive integer" for key in
                    ("num_layers", "num_attention_heads", "num_query_groups", "num_experts")
                    if arch.get(key) is not None and not _positive_int(arch[key])]
        if "num_layers" not in arch:
            problems.append("the architecture names no num_layers")
        if problems:
            raise BadInput(f"{where}: " + "; ".join(problems))
        if arch["num_layers"] % self.pipeline:
            problems.append(f"{arch['num_layers']} layers do not split evenly over {self.pipeline} pipeline stages")
        for key in ("num_attention_heads", "num_query_groups"):
            if arch.get(key) and arch[key] % self.tensor:
                problems.append(f"{key}={arch[key]} is not divisible by tensor parallel size {self.tensor}")
        experts = arch.get("num_experts")
        if not experts and (self.expert > 1 or self.expert_tensor not in (None, self.tensor)):
            problems.append(f"layout {self.name} splits experts but the model has none")
        if experts:
            if experts % self.expert:
                problems.append(f"{experts} experts do not split evenly over expert parallel size {self.expert}")
            stage = self.tensor * self.data  # ranks per pipeline stage (context parallel is 1)
            if stage % (self.etp * self.expert):
                problems.append(f"ETP {self.etp} x EP {self.expert} does not divide the {stage} ranks of a pipeline "
                                f"stage (TP {self.tensor} x DP {self.data})")
        if problems:
            raise BadInput(f"{where}: layout {self.name}: " + "; ".join(problems))


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def parse(text: str) -> Layout:
    """``tp2pp2dp2`` -> Layout(2, 2, 2); BadInput for anything else."""
    given: dict[str, int] = {}
    position = 0
    for match in _PART.finditer(text):
        key, size = match.group(1), int(match.group(2))
        if match.start() != position or key in given or size < 1:
            break
        given[key] = size
        position = match.end()
    else:
        if position == len(text) and given:
            return Layout(
                given.get("tp", 1), given.get("pp", 1), given.get("dp", 1), given.get("ep", 1), given.get("etp")
            )
    raise BadInput(f"layout {text!r} is not understood: write sizes as tp<N>, pp<N>, dp<N>, ep<N>, etp<N> "
                   "(each at most once, N >= 1), e.g. tp2pp2dp2")


def of_suite(model_args: dict, world_size: int, where: str) -> Layout:
    """The case's own layout: TP, PP, EP, ETP from MODEL_ARGS; DP = world size / (TP x PP)."""
    tensor = int(model_args.get("--tensor-model-parallel-size", 1))
    pipeline = int(model_args.get("--pipeline-model-parallel-size", 1))
    if world_size % (tensor * pipeline):
        raise BadInput(f"{where}: world size {world_size} is not a multiple of TP {tensor} x PP {pipeline}")
    etp = model_args.get("--expert-tensor-parallel-size")
    return Layout(tensor, pipeline, world_size // (tensor * pipeline),
                  int(model_args.get("--expert-model-parallel-size", 1)), None if etp is None else int(etp))


# --- what each megatron-core release can run -------------------------------------------------

ROUTING_INDICES_SINCE = (0, 17)  # DynamicInferenceRequest.routing_indices, recorded by the engine


def parse_version(text: str) -> tuple[int, int, int]:
    """'0.16.1' -> (0, 16, 1); '0.17.0rc1' -> (0, 17, 0)."""
    parts = [int("".join(ch for ch in piece if ch.isdigit()) or 0) for piece in str(text).split(".")[:3]]
    return tuple(parts + [0] * (3 - len(parts)))


def _dotted(version: tuple[int, ...]) -> str:
    return ".".join(map(str, version))


def unsupported(layout: Layout, version: tuple[int, int, int]) -> str | None:
    """Why megatron-core ``version`` cannot run ``layout`` through the ZMQ coordinator, or None.

    0.15 (the first release with the coordinator) serves tensor parallel only: its engine fans a
    request out to the ranks of its TP group (dynamic_engine.py, ``tp-coord-{dp}``), so pipeline
    stages after the first never receive one; and it has no expert-parallel work consensus (no
    ``dummy_forward``), so an engine without a request never joins the all-to-all its peers wait in.
    """
    if version[:2] >= (0, 16):
        return None
    release = f"megatron-core {_dotted(version)}"
    if layout.pipeline > 1:
        return (f"{release} cannot run pipeline parallel (PP{layout.pipeline}) through the ZMQ coordinator: "
                "its engine sends requests to its tensor-parallel group only, so pipeline stages after the first "
                "never receive them (needs 0.16+)")
    if layout.experts_span_engines:
        return (f"{release} cannot run expert parallel across engines (EP{layout.expert} spans "
                f"{layout.etp * layout.expert // layout.tensor} of the {layout.data} engines): it has no "
                "expert-parallel work consensus, so an engine without a request never joins its peers' "
                "all-to-all (needs 0.16+)")
    return None


def records_routing(version: tuple[int, int, int]) -> bool:
    return version[:2] >= ROUTING_INDICES_SINCE


def routing_note(version: tuple[int, int, int]) -> str:
    return (f"routing_indices: not recorded by megatron-core {_dotted(version)} (the engine records them from "
            f"{_dotted(ROUTING_INDICES_SINCE)}); this release is judged on the other metrics")
