"""The README's generated facts (devtools.readme_facts): the committed text is what the sources say now, and a
change to a source (a toolchain, a golden, a session) without ``--write`` fails here, in CI."""

from __future__ import annotations

import re
import shutil

import pytest

from logitsmatch.devtools import readme_facts
from logitsmatch.errors import EXIT_BAD_INPUT, EXIT_DRIFT, EXIT_OK, BadInput
from logitsmatch.toolchains import load_toolchains
from support import PROJECT, PYPROJECT

README = PROJECT / "README.md"


def test_the_committed_readme_is_what_its_sources_say_now():
    _, changed = readme_facts.render(README.read_text(), PROJECT)
    assert not changed, (f"README.md's generated block(s) {changed} are out of date: "
                         "run PYTHONPATH=tools python -m logitsmatch.devtools.readme_facts --write")


def _row(readme: str, toolchain: str) -> str:
    (row,) = [line for line in readme.splitlines() if line.startswith(f"| `{toolchain}` |")]
    return row


def test_every_toolchain_is_a_row_naming_the_platforms_it_has_goldens_for():
    """Counted here from the files, apart from the generator: the GPU toolchain is a row, and each row names every
    platform its goldens are for, or says it has none."""
    readme = README.read_text()
    toolchains = load_toolchains(PYPROJECT)
    assert any(toolchain.requires_gpu for toolchain in toolchains.values())
    cpu = sum(not toolchain.requires_gpu for toolchain in toolchains.values())
    assert f"{len(toolchains)} toolchains in `pyproject.toml`: {cpu} run on the CPU" in readme
    for name, toolchain in toolchains.items():
        row = _row(readme, name)
        assert ("| GPU |" in row) == toolchain.requires_gpu
        platforms = {path.stem.removeprefix("golden_values_").removesuffix(f"_{name}")
                     for path in (PROJECT / "golden_values").glob(f"*/golden_values_*_{name}.json")}
        goldens = row.split("|")[4]
        assert all(platform in goldens for platform in platforms) if platforms else goldens.strip() == "none", row


def test_every_session_of_the_noxfile_is_listed():
    readme = README.read_text()
    noxfile = (PROJECT / "noxfile.py").read_text()
    sessions = re.findall(r"^@nox\.session.*\n(?:@nox\.parametrize.*\n)?def (\w+)\(", noxfile, re.M)
    assert "fanout" in sessions and len(sessions) >= 10
    for name in sessions:
        assert re.search(rf"^\| `{name}(\(<toolchain>\))?` \| \S", readme, re.M), name


def test_the_readme_shows_the_exact_commands_ci_and_the_main_job_run():
    """The test command is the one `.ci/run` runs, character for character; the main job is the tagged session."""
    ci_command = (PROJECT / ".ci" / "run").read_text().strip().splitlines()[-1]
    shown = [line.strip() for line in README.read_text().splitlines() if line.startswith("    ")]
    assert ci_command in shown
    assert "python3 -m pip install nox && python3 -m nox -s logitsmatch -t default" in shown


@pytest.fixture
def project(tmp_path):
    """A copy of what the generator reads: pyproject.toml, noxfile.py, README.md, the suite folders' configs and
    the goldens' names (empty files: only the names are read)."""
    for name in ("pyproject.toml", "noxfile.py", "README.md"):
        shutil.copy(PROJECT / name, tmp_path / name)
    for config in (PROJECT / "suites").glob("*/model_config.yaml"):
        (tmp_path / "suites" / config.parent.name).mkdir(parents=True)
        (tmp_path / "suites" / config.parent.name / "model_config.yaml").write_text("")
    for golden in (PROJECT / "golden_values").glob("*/golden_values_*.json"):
        (tmp_path / "golden_values" / golden.parent.name).mkdir(parents=True, exist_ok=True)
        (tmp_path / "golden_values" / golden.parent.name / golden.name).write_text("")
    return tmp_path


def test_a_new_toolchain_golden_or_session_fails_the_check_until_written(project, monkeypatch, capsys):
    monkeypatch.setenv("LOGITSMATCH_ROOT", str(project))
    assert readme_facts.main(["--check"]) == EXIT_OK
    with (project / "pyproject.toml").open("a") as pyproject:
        pyproject.write('\n[tool.logitsmatch.toolchains."py3.12-torch2.14.1-mcore0.20.0"]\npython = "3.12"\n'
                        'torch = "2.14.1"\nmegatron-core = "0.20.0"\ntags = ["cpu", "releases"]\n')
    with (project / "noxfile.py").open("a") as noxfile:
        noxfile.write('\n\n@nox.session\ndef tidy(session):\n    """Tidy the results | folder."""\n')
    assert readme_facts.main(["--check"]) == EXIT_DRIFT
    assert "out of date: toolchains, sessions" in capsys.readouterr().err
    assert readme_facts.main(["--write"]) == EXIT_OK
    readme = (project / "README.md").read_text()
    assert _row(readme, "py3.12-torch2.14.1-mcore0.20.0") == \
        "| `py3.12-torch2.14.1-mcore0.20.0` | CPU | cpu, releases | none |"
    assert "| `tidy` | Tidy the results \\| folder. |" in readme and "14 toolchains" in readme

    tiny = project / "golden_values" / "gpt_dynamic_inference_tp8_pp1_dp1_tiny_logitsmatch_zmq"
    (tiny / "golden_values_cpu_py3.12-torch2.14.1-mcore0.20.0.json").write_text("")
    (tiny / "golden_values_cpu_py3.12-torch2.14.1-mcore0.20.0@x86_64-intel-avx512-mkl.json").write_text("")
    assert readme_facts.main(["--check"]) == EXIT_DRIFT
    assert readme_facts.main(["--write"]) == EXIT_OK and readme_facts.main(["--check"]) == EXIT_OK
    assert _row((project / "README.md").read_text(), "py3.12-torch2.14.1-mcore0.20.0").endswith(
        "| cpu, cpu@x86_64-intel-avx512-mkl: tp8_pp1_dp1_tiny |")


def test_a_readme_without_a_block_is_bad_input(project, monkeypatch, capsys):
    readme = project / "README.md"
    readme.write_text(re.sub(r"<!-- generated: sessions .*?<!-- end generated: sessions -->", "", readme.read_text(),
                             flags=re.S))
    with pytest.raises(BadInput, match="not so for: sessions"):
        readme_facts.render(readme.read_text(), project)
    monkeypatch.setenv("LOGITSMATCH_ROOT", str(project))
    assert readme_facts.main(["--check"]) == EXIT_BAD_INPUT
    assert capsys.readouterr().err.count("\n") == 1
