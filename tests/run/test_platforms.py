"""Platform profiles: the MODEL_ARGS flag -> megatron-core mapping on CPU and GPU, and what is reported.

GPU packages are "installed" by a parameter (``installed=``), never by patching imports,
so these tests run on any machine; nothing here needs a GPU.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from logitsmatch import paths
from logitsmatch.errors import BadInput
from logitsmatch.rank.checkpoint import read_checkpoint_args
from logitsmatch.run.plan import build_plan, choose_checkpoint, launch_env, tokenizer_spec
from logitsmatch.run.platforms import PLATFORMS, detect_platform_name, get_platform
from logitsmatch.run.runfiles import RunDir
from logitsmatch.suites import load_architecture, load_suite
from support import SEED_SUITE, TINY_SUITE

ALL_GPU = frozenset({"transformer_engine", "flash_attn", "flashinfer"})
NOTHING = frozenset()
CPU_NOT_APPLIED = {
    "--transformer-impl", "--sequence-parallel", "--use-flashinfer-fused-rope", "--bf16",
    "--distributed-backend", "--attention-backend", "--inference-fuse-tp-communication",
    "--inference-dynamic-batching-buffer-size-gb",
}


@pytest.fixture
def seed(project):
    return load_suite(project, SEED_SUITE)


@pytest.fixture
def synthetic_arch(project):
    return load_architecture(project, "minitron_583m")  # LayerNorm, no biases


@pytest.fixture
def minitron_like_arch(synthetic_arch):
    """What inference_optimized accepts (as the real Minitron checkpoint must): RMSNorm, no biases."""
    return {**synthetic_arch, "normalization": "RMSNorm"}


def plan_for(project, suite, platform, arch=None):
    tokenizer = tokenizer_spec(suite, project, False, None)
    choice = choose_checkpoint(suite, project, None, tokenizer, read_checkpoint_args)
    if arch is not None:
        choice.architecture = arch
    return build_plan(suite, platform, choice, Path("/ckpt"), tokenizer, "127.0.0.1")


# --- GPU profiles ---------------------------------------------------------------------------


def test_seed_on_dgx_h100_with_full_gpu_toolchain_applies_every_flag(project, seed, minitron_like_arch):
    platform = get_platform("dgx_h100", installed=ALL_GPU, gpu_count=8)
    plan, flags = plan_for(project, seed, platform, minitron_like_arch)
    assert plan["dtype"] == "bfloat16"
    assert plan["platform"]["backend"] == "nccl" and plan["platform"]["device"] == "cuda"
    assert plan["platform"]["layer_spec"] == "inference_optimized"
    assert plan["platform"]["attention"] == "flash-attn" and not plan["platform"]["stand_ins"]
    assert plan["parallel"] == {
        "tensor": 8, "pipeline": 1, "data": 1, "expert": 1, "expert_tensor": 8, "layout": "tp8",
        "sequence_parallel": True, "deterministic_mode": True,
        "inference_fuse_tp_communication": True, "attention_backend": "flash",
    }
    assert plan["moe"] is None
    assert plan["inference"]["use_flashinfer_fused_rope"] is True
    assert plan["inference"]["buffer_size_gb"] == 20.0
    assert plan["world_size"] == 8
    assert not flags.not_applied
    assert CPU_NOT_APPLIED <= set(flags.applied)


def test_synthetic_layernorm_model_gets_the_te_spec_and_the_reasons(project, seed, synthetic_arch):
    platform = get_platform("dgx_h100", installed=ALL_GPU, gpu_count=8)
    plan, flags = plan_for(project, seed, platform, synthetic_arch)
    assert plan["platform"]["layer_spec"] == "transformer_engine"
    assert plan["parallel"]["sequence_parallel"] is True
    assert plan["parallel"]["inference_fuse_tp_communication"] is False
    assert "needs RMSNorm" in flags.not_applied["--transformer-impl"]
    assert "inference_optimized" in flags.not_applied["--inference-fuse-tp-communication"]
    lines = flags.lines("dgx_h100")
    assert any(line.startswith("--transformer-impl: not applied on platform dgx_h100 (") for line in lines)


def test_gpu_without_optional_packages_reports_each_missing_one(project, seed, minitron_like_arch):
    platform = get_platform("gpu", installed=NOTHING, gpu_count=8)
    plan, flags = plan_for(project, seed, platform, minitron_like_arch)
    assert plan["dtype"] == "bfloat16" and plan["platform"]["backend"] == "nccl"
    assert plan["platform"]["layer_spec"] == "local"
    assert plan["platform"]["stand_ins"] is True  # the attention stand-in, on CUDA tensors
    assert "stand-in" in plan["platform"]["attention"]
    assert plan["parallel"]["sequence_parallel"] is False
    assert plan["parallel"]["attention_backend"] is None
    assert plan["inference"]["use_flashinfer_fused_rope"] is False
    assert "transformer-engine not installed" in flags.not_applied["--transformer-impl"]
    assert "transformer-engine not installed" in flags.not_applied["--sequence-parallel"]
    assert "flash-attn not installed" in flags.not_applied["--attention-backend"]
    assert "flashinfer not installed" in flags.not_applied["--use-flashinfer-fused-rope"]
    assert "--bf16" in flags.applied and "--distributed-backend" in flags.applied
    assert "--inference-dynamic-batching-buffer-size-gb" in flags.applied
    assert "--transformer-impl: not applied on platform gpu (transformer-engine not installed" in "\n".join(
        flags.lines("gpu")
    )


def test_te_without_flash_attn(project, seed, minitron_like_arch):
    platform = get_platform("dgx_h100", installed=frozenset({"transformer_engine"}), gpu_count=8)
    plan, flags = plan_for(project, seed, platform, minitron_like_arch)
    assert plan["platform"]["layer_spec"] == "inference_optimized"
    assert plan["parallel"]["sequence_parallel"] is True
    assert set(flags.not_applied) == {"--attention-backend", "--use-flashinfer-fused-rope"}


def test_honours_depends_on_installed_packages():
    full = PLATFORMS["dgx_h100"]
    assert {"--transformer-impl", "--attention-backend", "--bf16"} <= full.honours
    bare = full.configured(installed=NOTHING)
    assert "--transformer-impl" not in bare.honours and "--attention-backend" not in bare.honours
    assert {"--bf16", "--distributed-backend", "--inference-dynamic-batching-buffer-size-gb"} <= bare.honours
    assert "--enable-cuda-graph" not in full.honours  # not wired yet: always reported


def test_cuda_graph_flag_is_reported_not_dropped(project, tmp_path):
    suite = load_suite(project, TINY_SUITE)
    args = {**suite.model_args, "--enable-cuda-graph": True}
    platform = get_platform("gpu", installed=ALL_GPU, gpu_count=8)
    decision = platform.decide(args, {})
    assert "CUDA graphs" in decision.not_applied["--enable-cuda-graph"]


def test_more_ranks_than_gpus_is_refused(project, seed):
    platform = get_platform("h100", installed=NOTHING, gpu_count=1)
    with pytest.raises(BadInput, match="8 ranks need 8 GPUs.*--tensor-parallel-size 1"):
        plan_for(project, seed, platform)


# --- command-line overrides and labels ----------------------------------------------------------


@pytest.mark.parametrize("dtype, label", [("bfloat16", "h100-tp1-bf16"), ("fp32", "h100-tp1-fp32")])
def test_gpu_check_overrides_are_labelled_and_reported(project, seed, dtype, label):
    platform = get_platform("h100", tensor_parallel=1, dtype=dtype, installed=NOTHING, gpu_count=1)
    plan, flags = plan_for(project, seed, platform)
    assert plan["platform"]["name"] == label and platform.label(seed.model_args) == label
    assert plan["world_size"] == 1 and plan["parallel"]["tensor"] == 1
    assert plan["platform"]["overrides"]["tensor_parallel"] == {"suite": 8, "run": 1}
    assert "overridden on the command line" in flags.not_applied["--tensor-model-parallel-size"]
    assert "needs" in flags.not_applied["--sequence-parallel"]
    if dtype == "fp32":
        assert plan["dtype"] == "float32"
        assert flags.not_applied["--bf16"] == "overridden on the command line: --dtype float32"
    else:
        assert plan["dtype"] == "bfloat16" and "--bf16" in flags.applied
    golden = paths.golden_path(seed.name, label, "py3.12-torch2.11.0-mcore0.19.2")
    assert golden.name == f"golden_values_{label}_py3.12-torch2.11.0-mcore0.19.2.json"


def test_tp1_with_te_reports_sequence_parallel_and_fused_comm(project, seed, minitron_like_arch):
    platform = get_platform("h100", tensor_parallel=1, installed=ALL_GPU, gpu_count=1)
    plan, flags = plan_for(project, seed, platform, minitron_like_arch)
    assert plan["platform"]["name"] == "h100-tp1-bf16"
    assert flags.not_applied["--sequence-parallel"] == "needs tensor parallel > 1 (this run is TP1)"
    assert flags.not_applied["--inference-fuse-tp-communication"] == "needs tensor parallel > 1 (this run is TP1)"


def test_label_is_the_profile_unless_overridden(seed):
    assert PLATFORMS["h100"].label(seed.model_args) == "h100"
    assert PLATFORMS["h100"].configured(tensor_parallel=1).label(seed.model_args) == "h100-tp1-bf16"
    assert PLATFORMS["cpu"].configured(dtype_override="float32").label(seed.model_args) == "cpu-tp8-fp32"


# --- CPU profile ----------------------------------------------------------------------------


def test_seed_on_cpu(project, seed):
    plan, flags = plan_for(project, seed, get_platform("cpu"))
    assert plan["dtype"] == "float32"
    assert plan["platform"]["backend"] == "gloo" and plan["platform"]["device"] == "cpu"
    assert plan["platform"]["layer_spec"] == "local" and plan["platform"]["stand_ins"] is True
    assert plan["parallel"]["sequence_parallel"] is False and plan["parallel"]["attention_backend"] is None
    assert plan["parallel"]["inference_fuse_tp_communication"] is False
    assert plan["inference"]["buffer_size_gb"] == 0.25
    assert plan["inference"]["use_flashinfer_fused_rope"] is False
    assert plan["world_size"] == 8 and plan["platform"]["name"] == "cpu"
    assert CPU_NOT_APPLIED == set(flags.not_applied)
    assert "--deterministic-mode" in flags.applied and "--tensor-model-parallel-size" in flags.applied
    assert all("not applied on platform cpu (" in line for line in flags.lines("cpu")[:-1])


def test_cpu_dtype_override_applies_bf16(project, seed):
    plan, flags = plan_for(project, seed, get_platform("cpu", dtype="bf16"))
    assert plan["dtype"] == "bfloat16" and plan["platform"]["name"] == "cpu-tp8-bf16"
    assert "--bf16" in flags.applied and "--bf16" not in flags.not_applied


def test_launch_env_keeps_nccl_on_loopback(project, seed, tmp_path, monkeypatch):
    monkeypatch.delenv("NCCL_SOCKET_IFNAME", raising=False)
    gpu = launch_env(seed, get_platform("h100", installed=NOTHING, gpu_count=1), RunDir(tmp_path), "127.0.0.1")
    cpu = launch_env(seed, get_platform("cpu"), RunDir(tmp_path), "127.0.0.1")
    assert gpu["NCCL_SOCKET_IFNAME"] == "lo" and "OMP_NUM_THREADS" not in gpu
    assert gpu["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8" and gpu["NCCL_ALGO"] == "Ring"
    assert "NCCL_SOCKET_IFNAME" not in cpu and cpu["OMP_NUM_THREADS"] == "1"


# --- selection ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "devices, name",
    [
        ([], "cpu"),
        (["NVIDIA H100 80GB HBM3"], "h100"),
        (["NVIDIA H100 80GB HBM3"] * 8, "dgx_h100"),
        (["NVIDIA A100-SXM4-80GB"] * 8, "gpu"),
    ],
)
def test_detect_platform(devices, name):
    assert detect_platform_name(devices) == name


def test_bad_platform_choices():
    with pytest.raises(BadInput, match="unknown platform 'tpu'"):
        get_platform("tpu")
    with pytest.raises(BadInput, match="unknown dtype"):
        get_platform("cpu", dtype="int8")
    with pytest.raises(BadInput, match="at least 1"):
        get_platform("cpu", tensor_parallel=0)


# --- the case family: layouts, engines, experts ---------------------------------------------------

PP8 = "gpt_dynamic_inference_tp1_pp8_dp1_583m_logitsmatch_zmq"
DP8_TINY = "gpt_dynamic_inference_tp1_pp1_dp8_tiny_logitsmatch_zmq"
MOE = "gpt_dynamic_inference_tp4_etp1_pp1_ep8_16B_logitsmatch_zmq"
MOE_TINY = "gpt_dynamic_inference_tp4_etp1_pp1_ep8_tiny_logitsmatch_zmq"


def test_family_plans_on_cpu(project):
    pp8, _ = plan_for(project, load_suite(project, PP8), get_platform("cpu"))
    assert (pp8["world_size"], pp8["parallel"]["pipeline"], pp8["parallel"]["data"]) == (8, 8, 1)
    assert pp8["inference"]["hold_requests"] == 1  # one engine: it holds every prompt
    dp8, _ = plan_for(project, load_suite(project, DP8_TINY), get_platform("cpu"))
    assert (dp8["world_size"], dp8["parallel"]["tensor"], dp8["parallel"]["data"]) == (8, 1, 8)
    assert dp8["inference"]["hold_requests"] is None and len(dp8["prompts"]) == 8  # one prompt per engine
    moe, flags = plan_for(project, load_suite(project, MOE_TINY), get_platform("cpu"))
    wanted = {"tensor": 4, "data": 2, "expert": 8, "expert_tensor": 1, "layout": "tp4dp2ep8etp1"}
    assert {key: moe["parallel"][key] for key in wanted} == wanted
    assert moe["moe"] == {"token_dispatcher_type": "alltoall", "grouped_gemm": False,
                          "router_load_balancing_type": "seq_aux_loss", "enable_routing_replay": True,
                          "pad_experts_for_cuda_graph_inference": False}
    assert "SequentialMLP" in flags.not_applied["--moe-grouped-gemm"]
    assert "--num-experts" in flags.applied and "--moe-aux-loss-coeff" in flags.no_effect


def test_family_suites_leave_each_engine_at_most_one_prompt(project):
    """Without a hold (DP > 1) a single request per engine keeps the batch schedule timing-independent."""
    from logitsmatch.run.plan import hold_requests

    for name in ("583m", "tiny"):
        for case in ("tp2_pp2_dp2", "tp1_pp1_dp8"):
            plan, _ = plan_for(project, load_suite(project, f"gpt_dynamic_inference_{case}_{name}_logitsmatch_zmq"),
                               get_platform("cpu"))
            assert len(plan["prompts"]) <= plan["parallel"]["data"] and plan["inference"]["hold_requests"] is None
    assert hold_requests(parse_layout("tp8"), 4) == 4 and hold_requests(parse_layout("tp2pp2dp2"), 8) is None


def test_scaled_down_moe_reports_its_shape_flags_and_keeps_its_layout_flags(project):
    plan, flags = plan_for(project, load_suite(project, MOE), get_platform("cpu"))
    assert plan["architecture"]["num_layers"] == 9 and plan["architecture"]["num_experts"] == 64
    for flag in ("--num-layers", "--hidden-size", "--moe-ffn-hidden-size", "--kv-channels"):
        assert "scaled down" in flags.not_applied[flag] and flag not in flags.applied
    assert {"--num-experts", "--moe-router-topk", "--moe-router-score-function"} <= set(flags.applied)


def test_a_shape_the_suite_does_not_declare_scaled_is_refused(project):
    suite = load_suite(project, MOE_TINY)  # tiny_moe matches its flags exactly; no scaled_down
    arch = {**load_architecture(project, "tiny_moe"), "num_layers": 2}
    with pytest.raises(BadInput, match="says --num-layers 4 but the checkpoint has num_layers=2"):
        plan_for(project, suite, get_platform("cpu"), arch)
    arch = {**load_architecture(project, "tiny_moe"), "moe_router_topk": 2}
    with pytest.raises(BadInput, match="says --moe-router-topk 6"):
        plan_for(project, suite, get_platform("cpu"), arch)


def test_oldest_release_is_refused_pipeline_and_cross_engine_experts(project):
    from logitsmatch.errors import Unsupported

    for name, what in ((PP8, r"pipeline parallel \(PP8\)"), (MOE, "expert parallel across engines")):
        suite = load_suite(project, name)
        tokenizer = tokenizer_spec(suite, project, False, None)
        choice = choose_checkpoint(suite, project, None, tokenizer, read_checkpoint_args)
        with pytest.raises(Unsupported, match=f"megatron-core 0.15.3 cannot run {what}"):
            build_plan(suite, get_platform("cpu"), choice, Path("/ckpt"), tokenizer, "127.0.0.1", (0, 15, 3))
        build_plan(suite, get_platform("cpu"), choice, Path("/ckpt"), tokenizer, "127.0.0.1", (0, 16, 1))


@pytest.mark.parametrize("layout, label, world", [("tp8", "cpu", 8), ("tp1", "cpu-tp1-fp32", 1),
                                                   ("pp8", "cpu-pp8-fp32", 8), ("tp2pp2dp2", "cpu-tp2pp2dp2-fp32", 8)])
def test_layout_override_is_labelled_unless_it_is_the_suites_own(project, seed, layout, label, world):
    platform = get_platform("cpu", layout=parse_layout(layout))
    plan, flags = plan_for(project, seed, platform)
    assert platform.label(seed.model_args) == label == plan["platform"]["name"].replace("cpu-tp8-fp32", "cpu")
    assert plan["world_size"] == world and plan["parallel"]["layout"] == layout
    if label != "cpu":
        assert plan["platform"]["overrides"]["layout"] == {"suite": "tp8", "run": layout}
        assert "overridden on the command line: --layout" in flags.not_applied["--tensor-model-parallel-size"]


def test_tensor_parallel_and_layout_overrides_exclude_each_other():
    with pytest.raises(BadInput, match="give one"):
        get_platform("cpu", tensor_parallel=1, layout=parse_layout("tp1"))


def parse_layout(text):
    from logitsmatch.layouts import parse

    return parse(text)
