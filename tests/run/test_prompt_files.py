"""--prompt-file: a case's own prompt file beside its model_config.yaml, a data set under ${DATA_PATH} or its
stand-in, the first --prompt-file-num-truncate lines; and the driver flags that travel with it into the plan."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import yaml

from logitsmatch.errors import BadInput
from logitsmatch.rank.worker import kept_results
from logitsmatch.suites import load_suite
from support import PROJECT
from support.plans import plan_of

MULTIPROMPT = "gpt_static_inference_tp1_pp1_16b_multiprompt_tokensmatch"
MULTIPROMPT_TINY = "gpt_static_inference_tp1_pp1_tiny_multiprompt_tokensmatch"
STANDIN = PROJECT / "model_configs" / "prompts" / "sharegpt_vicuna_standin.jsonl"


def texts(path):
    return [json.loads(line)["text"] for line in path.read_text().splitlines() if line.strip()]


def copy_suite(tmp_path, name):
    shutil.copytree(PROJECT / "suites" / name, tmp_path / "suites" / name)
    return tmp_path / "suites" / name


def edit_args(folder, **changes):
    path = folder / "model_config.yaml"
    config = yaml.safe_load(path.read_text())
    for name, value in changes.items():
        config["MODEL_ARGS"]["--" + name.replace("_", "-")] = value
    path.write_text(yaml.safe_dump(config))


def test_a_case_file_of_megatron_lm_is_read_beside_the_suites_model_config():
    for name in (MULTIPROMPT, MULTIPROMPT_TINY):
        suite = load_suite(PROJECT, name)
        assert suite.prompt_file() == PROJECT / "suites" / name / "test_prompts.jsonl"
        assert suite.prompts == texts(suite.prompt_file())
        assert len(suite.prompts) == 2 and suite.prompts[1].startswith("GNU GENERAL PUBLIC LICENSE")


DATA_SET = "${DATA_PATH}/text/sharegpt-vicuna/filtered/processed.jsonl"  # as Megatron-LM's ShareGPT cases name it


def data_set_suite(tmp_path, standin: bool = True):
    """A suite whose --prompt-file is ShareGPT-Vicuna under ${DATA_PATH} (truncated to 128), with the stand-in."""
    folder = copy_suite(tmp_path, MULTIPROMPT_TINY)
    edit_args(folder, prompt_file=DATA_SET, prompt_file_num_truncate=128)
    sidecar = yaml.safe_load((folder / "logitsmatch.yaml").read_text())
    if standin:
        sidecar["prompt_file"] = str(STANDIN.relative_to(PROJECT))
        (tmp_path / STANDIN.relative_to(PROJECT)).parent.mkdir(parents=True)
        shutil.copy(STANDIN, tmp_path / STANDIN.relative_to(PROJECT))
    (folder / "logitsmatch.yaml").write_text(yaml.safe_dump(sidecar))
    return folder


def test_a_data_set_without_its_variable_reads_the_stand_in_truncated(tmp_path, monkeypatch):
    monkeypatch.delenv("DATA_PATH", raising=False)
    data_set_suite(tmp_path)
    suite = load_suite(tmp_path, MULTIPROMPT_TINY)
    assert suite.prompt_file() == tmp_path / "model_configs" / "prompts" / "sharegpt_vicuna_standin.jsonl"
    assert suite.prompts == texts(STANDIN)[:128] and len(texts(STANDIN)) > 128


def test_a_data_set_under_its_variable_is_read_there(tmp_path, monkeypatch):
    data = tmp_path / "data" / "text" / "sharegpt-vicuna" / "filtered" / "processed.jsonl"
    data.parent.mkdir(parents=True)
    data.write_text('{"text": "first", "id": 1}\n\n{"text": "second"}\n{"text": "third"}\n')
    monkeypatch.setenv("DATA_PATH", str(tmp_path / "data"))
    folder = data_set_suite(tmp_path)
    edit_args(folder, prompt_file_num_truncate=2)
    assert load_suite(tmp_path, MULTIPROMPT_TINY).prompts == ["first", "second"]


def test_a_data_set_without_its_variable_or_a_stand_in_is_one_bad_input_naming_the_variable(tmp_path, monkeypatch):
    monkeypatch.delenv("DATA_PATH", raising=False)
    data_set_suite(tmp_path, standin=False)
    with pytest.raises(BadInput, match=r"needs DATA_PATH set, or a prompt_file stand-in"):
        _ = load_suite(tmp_path, MULTIPROMPT_TINY).prompts


@pytest.mark.parametrize("changes, message", [
    ({"prompts": "also a prompt"}, "--prompts and --prompt-file exclude each other"),
    ({"prompt_file": "/elsewhere/prompts.jsonl"}, "neither a file of Megatron-LM's test cases"),
])
def test_a_prompt_file_the_harness_cannot_place_is_bad_input(tmp_path, changes, message):
    folder = copy_suite(tmp_path, MULTIPROMPT_TINY)
    edit_args(folder, **changes)
    with pytest.raises(BadInput, match=message):
        _ = load_suite(tmp_path, MULTIPROMPT_TINY).prompts


@pytest.mark.parametrize("line", ['{"text": ""}', '["text"]', "not json", '{"prompt": "x"}'])
def test_a_prompt_file_line_without_text_is_bad_input_naming_the_line(tmp_path, line):
    folder = copy_suite(tmp_path, MULTIPROMPT_TINY)
    (folder / "test_prompts.jsonl").write_text('{"text": "fine"}\n' + line + "\n")
    with pytest.raises(BadInput, match=r"test_prompts.jsonl:2: a prompt file's line is a JSON object"):
        _ = load_suite(tmp_path, MULTIPROMPT_TINY).prompts


def test_the_prompt_file_is_part_of_the_suites_digest(tmp_path):
    folder = copy_suite(tmp_path, MULTIPROMPT_TINY)
    before = load_suite(tmp_path, MULTIPROMPT_TINY).config_digest()
    (folder / "test_prompts.jsonl").write_text('{"text": "another prompt"}\n')
    assert load_suite(tmp_path, MULTIPROMPT_TINY).config_digest() != before


def test_the_stand_in_is_what_its_generator_writes():
    completed = subprocess.run([sys.executable, str(PROJECT / "scripts" / "sharegpt_standin.py"), "--check"],
                               capture_output=True, text=True)
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_the_driver_flags_reach_the_plan():
    static = plan_of(PROJECT, MULTIPROMPT_TINY)
    assert static["inference"]["max_requests"] == 1  # --inference-max-requests: consecutive batches of one
    assert "termination_id" not in static["sampling"] and "output_every_n_results" not in static


def test_the_termination_id_and_the_kept_results_reach_the_plan(tmp_path, monkeypatch):
    monkeypatch.delenv("DATA_PATH", raising=False)
    folder = data_set_suite(tmp_path)
    edit_args(folder, termination_id=-1, output_every_n_results=32)
    shutil.copytree(PROJECT / "model_configs", tmp_path / "model_configs", dirs_exist_ok=True)
    plan = plan_of(tmp_path, MULTIPROMPT_TINY)
    assert plan["sampling"]["termination_id"] == -1 and plan["output_every_n_results"] == 32
    assert len(plan["prompts"]) == 128


def test_every_nth_result_and_the_last_are_kept_as_megatrons_driver_writes_them():
    assert kept_results(list(range(128)), 32) == [0, 32, 64, 96, 127]
    assert kept_results(list(range(5)), 1) == [0, 1, 2, 3, 4]
    assert kept_results([0, 1, 2], None) == [0, 1, 2]


SHAREGPT_SUITES = ["gpt_dynamic_inference_tp1_pp1_583m_logitsmatch", "gpt_dynamic_inference_tp1_pp1_tiny_logitsmatch",
                   "gpt_dynamic_inference_tp1_pp1_583m_async_sched", "gpt_dynamic_inference_tp1_pp1_tiny_async_sched"]


@pytest.mark.parametrize("name", SHAREGPT_SUITES)
def test_the_sharegpt_cases_read_the_stand_in_without_data_path(name, monkeypatch):
    """Megatron-LM's ShareGPT-Vicuna cases: the stand-in's first 128 prompts, 128 tokens each, none ending early,
    every 32nd result and the last kept."""
    monkeypatch.delenv("DATA_PATH", raising=False)
    suite = load_suite(PROJECT, name)
    assert suite.model_args["--prompt-file"] == DATA_SET and suite.prompt_file() == STANDIN
    plan = plan_of(PROJECT, name)
    assert plan["prompts"] == texts(STANDIN)[:128]
    assert plan["sampling"]["termination_id"] == -1 and plan["sampling"]["num_tokens_to_generate"] == 128
    assert plan["output_every_n_results"] == 32
