"""docs/family/coverage.json stays in step with Megatron-LM's inference cases, the suites here and its README.

One row per case folder of ../shared/megatron_inference_cases; a case that runs names suites that exist,
its model_config.yaml there unchanged, each with CPU goldens; every Megatron case with a suite here is a row
that runs; the README is what scripts/family_coverage.py draws from the table.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from logitsmatch.errors import BadInput
from logitsmatch.family import RENDERED, Row, check_row, load_coverage
from logitsmatch.render.family import coverage_markdown
from logitsmatch.suites import suite_names
from support import PROJECT

ROWS = load_coverage(PROJECT)
RUNNING = [row for row in ROWS if row.runs]


def test_every_case_folder_has_exactly_one_row(megatron_inference_cases):
    assert [row.case for row in ROWS] == [folder.name for folder in megatron_inference_cases]


def test_a_case_that_runs_is_its_suite_here_unchanged(megatron_inference_cases):
    folders = {folder.name: folder for folder in megatron_inference_cases}
    assert RUNNING, "the table claims no case runs here"
    for row in RUNNING:
        assert row.suite == row.case, row
        ours = PROJECT / "suites" / row.suite / "model_config.yaml"
        assert ours.read_bytes() == (folders[row.case] / "model_config.yaml").read_bytes(), f"{ours} was changed"


def test_each_suite_and_tiny_sibling_named_exists_with_cpu_goldens():
    known = set(suite_names(PROJECT))
    for row in RUNNING:
        for suite in (row.suite, row.tiny):
            assert suite in known, f"{row.case}: no suite {suite} in suites/"
            goldens = sorted((PROJECT / "golden_values" / suite).glob("golden_values_cpu_*.json"))
            assert [g for g in goldens if not g.name.endswith(".provenance.json")], f"{suite} has no CPU golden"
        assert "tiny" in row.tiny and row.tiny != row.suite, row


def test_every_megatron_case_with_a_suite_here_is_a_row_that_runs(megatron_inference_cases):
    cases_with_suites = {folder.name for folder in megatron_inference_cases} & set(suite_names(PROJECT))
    assert cases_with_suites == {row.case for row in RUNNING}


def test_the_readme_is_drawn_from_the_table():
    assert (PROJECT / RENDERED).read_text() == coverage_markdown(ROWS), "run python scripts/family_coverage.py"
    checked = subprocess.run([sys.executable, "scripts/family_coverage.py", "--check"], cwd=PROJECT,
                             capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.parametrize(
    "row, complaint",
    [
        (Row("c", "cannot-run", None, None, None), "must say why"),
        (Row("c", "runs-with-difference", "c", "c_tiny", None), "must say why"),
        (Row("c", "cannot-run", None, None, "the GPU is busy"), "begins with"),
        (Row("c", "cannot-run", "c", None, "needs CUDA: fp8"), "no suite"),
        (Row("c", "runs", "c", None, None), "tiny sibling"),
        (Row("c", "sometimes", "c", "c_tiny", None), "not one of"),
        (Row("c", "runs", "c", "c_tiny", "two\nlines"), "one line"),
    ],
)
def test_a_row_that_breaks_a_rule_is_refused(row, complaint):
    with pytest.raises(BadInput, match=complaint):
        check_row(row)


def test_the_table_names_both_kinds_of_cannot_run():
    reasons = [row.reason for row in ROWS if not row.runs]
    assert any(reason.startswith("needs CUDA: ") for reason in reasons)
    assert any(reason.startswith("not yet built here: ") for reason in reasons)


GRAPHS = "--enable-cuda-graph"


def graph_twins() -> list[tuple[str, str]]:
    """(CUDA-graph suite, its graph-free twin): every suite here whose name ends in _cuda_graphs and whose twin,
    the same name without it, is a suite here too (the case and its tiny sibling alike)."""
    known = set(suite_names(PROJECT))
    return [(name, name.removesuffix("_cuda_graphs")) for name in sorted(known)
            if name.endswith("_cuda_graphs") and name.removesuffix("_cuda_graphs") in known]


def numerics(golden) -> dict:
    return {request: (entry["generated_tokens"], entry["logprobs"]) for request, entry in golden.items()
            if isinstance(entry, dict)}


def test_a_cuda_graph_suite_equals_its_graph_free_twin_on_the_cpu():
    """The rows that say CUDA graphs are not applied on a CPU: the suite differs from its twin in --enable-cuda-graph
    alone, and every CPU golden they share is the same tokens and logprobs, bit for bit."""
    import json

    import yaml

    twins = graph_twins()
    assert twins, "no CUDA-graph suite with a graph-free twin"
    for graphs, twin in twins:
        config = {name: yaml.safe_load((PROJECT / "suites" / name / "model_config.yaml").read_text())
                  for name in (graphs, twin)}
        assert config[graphs]["MODEL_ARGS"].pop(GRAPHS) is True, graphs
        assert config[graphs] == config[twin], f"{graphs} differs from {twin} in more than {GRAPHS}"
        shared = sorted({path.name for path in (PROJECT / "golden_values" / graphs).glob("golden_values_cpu_*.json")}
                        & {path.name for path in (PROJECT / "golden_values" / twin).glob("golden_values_cpu_*.json")})
        shared = [name for name in shared if not name.endswith(".provenance.json")]
        assert shared, f"{graphs} and {twin} share no CPU golden"
        for name in shared:
            ours, theirs = (json.loads((PROJECT / "golden_values" / suite / name).read_text())
                            for suite in (graphs, twin))
            assert numerics(ours) == numerics(theirs), f"{graphs} moved from {twin} ({name})"


# What a dynamic-engine run on a CPU never acts on: no CUDA graph is captured (so no step is padded to a graph's
# batch), and megatron-core's dynamic engine pads the experts' input only on steps that replay a graph.
DYNAMIC_GRAPH_FLAGS = {"--cuda-graph-impl", "--inference-dynamic-batching-num-cuda-graphs",
                       "--moe-pad-experts-for-cuda-graph-inference"}
DYNAMIC_GRAPH_TWINS = {  # dynamic-engine suite asking for CUDA graphs: its graph-free twin
    "gpt_dynamic_inference_tp4_etp1_pp1_ep8_16B_logitsmatch_cudagraph_zmq":
        "gpt_dynamic_inference_tp4_etp1_pp1_ep8_16B_logitsmatch_zmq",
    "gpt_dynamic_inference_tp4_etp1_pp1_ep8_tiny_logitsmatch_cudagraph_zmq":
        "gpt_dynamic_inference_tp4_etp1_pp1_ep8_tiny_logitsmatch_zmq",
}


def flattened(plan: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in plan.items():
        out.update(flattened(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return out


@pytest.mark.parametrize("graphs, twin", DYNAMIC_GRAPH_TWINS.items())
def test_a_dynamic_cuda_graph_suite_runs_its_graph_free_twins_plan_on_the_cpu(graphs, twin):
    """The rows that say these suites compute what their twins compute: the case files differ only in
    DYNAMIC_GRAPH_FLAGS, and the ranks get the twin's plan but for the suite's name and the MoE padding flag, which
    megatron-core's dynamic engine reads only on a step that replays a CUDA graph (none on a CPU)."""
    import yaml

    from support.plans import plan_of

    config = {name: yaml.safe_load((PROJECT / "suites" / name / "model_config.yaml").read_text())
              for name in (graphs, twin)}
    args = {name: config[name].pop("MODEL_ARGS") for name in (graphs, twin)}
    differing = {flag for flag in args[graphs].keys() | args[twin].keys()
                 if args[graphs].get(flag) != args[twin].get(flag)}
    assert differing and differing <= DYNAMIC_GRAPH_FLAGS, f"{graphs} differs from {twin} in {sorted(differing)}"
    assert config[graphs] == config[twin], f"{graphs} differs from {twin} beyond MODEL_ARGS"
    plans = {name: flattened(plan_of(PROJECT, name)) for name in (graphs, twin)}
    moved = {key for key in plans[graphs].keys() | plans[twin].keys() if plans[graphs].get(key) != plans[twin].get(key)}
    assert moved == {"suite", "moe.pad_experts_for_cuda_graph_inference"}, moved
