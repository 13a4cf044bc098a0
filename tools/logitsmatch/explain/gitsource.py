"""A package's source in a local git checkout: refs, the commits between two, and a commit's tree
installed as an overlay folder (see ``explain.environments``), cached by commit.

megatron-core from a Megatron-LM checkout is not built: ``megatron/core`` of the commit is
exported as it is (``git archive``), with a dist-info naming its own version (from the tree's
``package_info.py``) and the commit (PEP 610 ``direct_url.json``). Its one compiled part, the
C++ dataset helper ``megatron/core/datasets/helpers_cpp``, is not on the inference path; the
base environment's (its release wheel's) is copied beside it when there is one, and the
install record says which. Any other package is installed with ``pip install --no-deps
--target`` from the exported tree.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

from logitsmatch.errors import BadInput

TAG_PATTERNS = {"megatron-core": "core_v{version}"}
PACKAGE_FOLDERS = {"megatron-core": "megatron/core"}


def git(gitdir: str | Path, *args: str, binary: bool = False):
    completed = subprocess.run(["git", "-C", str(gitdir), *args], capture_output=True, text=not binary, timeout=300)
    if completed.returncode != 0:
        error = completed.stderr if not binary else completed.stderr.decode(errors="replace")
        raise BadInput(f"git {' '.join(args[:3])} in {gitdir}: {(error.strip().splitlines() or ['failed'])[-1]}")
    return completed.stdout


def rev(gitdir: str | Path, ref: str) -> str:
    return git(gitdir, "rev-parse", "--verify", f"{ref}^{{commit}}").strip()


def tag_for(package: str, version: str) -> str:
    return TAG_PATTERNS.get(package, "v{version}").format(version=version.split("+", maxsplit=1)[0])


@dataclass(frozen=True)
class Commit:
    sha: str
    subject: str

    @property
    def short(self) -> str:
        return self.sha[:10]


def commits_between(gitdir: str | Path, good: str, bad: str) -> list[Commit]:
    """``good`` then every commit after it up to ``bad`` along the first-parent line, oldest first.

    The first-parent line keeps the search linear through merges (a merge is tested as one step,
    as ``git bisect --first-parent`` does). ``good`` must be an ancestor of ``bad``; otherwise their
    merge base is the start (and the report says so through the first commit listed)."""
    good_sha, bad_sha = rev(gitdir, good), rev(gitdir, bad)
    base = git(gitdir, "merge-base", good_sha, bad_sha).strip()
    lines = git(gitdir, "log", "--first-parent", "--format=%H %s", f"{base}..{bad_sha}").splitlines()
    later = [Commit(*line.split(" ", 1)) if " " in line else Commit(line, "") for line in reversed(lines)]
    start = git(gitdir, "log", "-1", "--format=%H %s", base).strip().split(" ", 1)
    return [Commit(start[0], start[1] if len(start) > 1 else ""), *later]


def files_touched(gitdir: str | Path, sha: str, under: str | None = None) -> list[str]:
    names = git(gitdir, "diff-tree", "--no-commit-id", "--name-only", "-r", "-m", "--first-parent", sha).split()
    return sorted(name for name in set(names) if under is None or name.startswith(under.rstrip("/") + "/"))


def _export(gitdir: str | Path, sha: str, paths: list[str], target: Path) -> None:
    data = git(gitdir, "archive", "--format=tar", sha, *paths, binary=True)
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        archive.extractall(target, filter="data")


def _package_info_version(tree: Path) -> str:
    text = (tree / "megatron" / "core" / "package_info.py").read_text()
    fields = dict(re.findall(r"^(MAJOR|MINOR|PATCH|PRE_RELEASE)\s*=\s*['\"]?([^'\"\n#]*)['\"]?", text, re.M))
    version = (
        f"{fields.get('MAJOR', '0').strip()}.{fields.get('MINOR', '0').strip()}.{fields.get('PATCH', '0').strip()}"
    )
    return version + fields.get("PRE_RELEASE", "").strip()


def tree_name(sha: str, take: tuple[str, tuple[str, ...]] | None = None) -> str:
    """What names a tree: the commit, or ``<commit>+<other>-<digest of the files taken from other>``."""
    if take is None:
        return sha
    digest = hashlib.sha256("\n".join(sorted(take[1])).encode()).hexdigest()[:10]
    return f"{sha}+{take[0][:12]}-{digest}"


def _take_files(gitdir: str | Path, take: tuple[str, tuple[str, ...]], staging: Path) -> None:
    """``take`` = (sha, files): those files as of that commit over the exported tree (absent there: removed)."""
    present = set(git(gitdir, "ls-tree", "-r", "--name-only", take[0], "--", *take[1]).split())
    for name in take[1]:
        (staging / name).unlink(missing_ok=True)
    if present:
        _export(gitdir, take[0], sorted(present), staging)


def install_commit(package: str, gitdir: str | Path, sha: str, cache: Path, base_python: str,
                   base_helper: Path | None, take: tuple[str, tuple[str, ...]] | None = None) -> tuple[Path, dict]:
    """An overlay folder with ``package`` as of commit ``sha`` (cached), and how it was installed. ``take`` (sha,
    files): those files of another commit replace the tree's (which of a commit's files alone moves a result)."""
    if take is not None and package not in PACKAGE_FOLDERS:
        raise BadInput(f"{package}: files of one commit over another's tree are taken for megatron-core only")
    folder = cache / "commits" / f"{package}@{tree_name(sha, take)}"
    record_path = folder / ".complete"
    if record_path.is_file():
        return folder, json.loads(record_path.read_text())
    staging = folder.with_name(folder.name + f".{os.getpid()}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    if package in PACKAGE_FOLDERS:
        _export(gitdir, sha, [PACKAGE_FOLDERS[package]], staging)
        version = _package_info_version(staging)
        record = {"how": f"git archive {sha[:10]} {PACKAGE_FOLDERS[package]} (not built)", "version": version}
        if take is not None:
            _take_files(gitdir, take, staging)
            record["how"] += f", with {', '.join(sorted(take[1]))} of {take[0][:10]}"
        helper_dir = staging / "megatron" / "core" / "datasets"
        if base_helper is not None and helper_dir.is_dir():
            shutil.copy2(base_helper, helper_dir / base_helper.name)
            record["cpp_helper"] = (
                f"reused the base environment's {base_helper.name} (dataset helper, not on the inference path)"
            )
        else:
            record["cpp_helper"] = "absent (dataset helper, not on the inference path; not built)"
        info = staging / f"{package.replace('-', '_')}-{version}+g{sha[:10]}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}+g{sha[:10]}\n")
        (info / "INSTALLER").write_text("logitsmatch-explain\n")
        (info / "direct_url.json").write_text(json.dumps({"url": f"file://{Path(gitdir).resolve()}",
                                                          "vcs_info": {"vcs": "git", "commit_id": sha}}))
        files = sorted(str(path.relative_to(staging)) for path in staging.rglob("*") if path.is_file())
        (info / "RECORD").write_text("".join(f"{name},,\n" for name in files) + f"{info.name}/RECORD,,\n")
    else:
        tree = staging.with_name(staging.name + ".src")
        shutil.rmtree(tree, ignore_errors=True)
        tree.mkdir()
        _export(gitdir, sha, [], tree)
        built = subprocess.run([base_python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                                "--target", str(staging), str(tree)], capture_output=True, text=True, timeout=1800)
        shutil.rmtree(tree, ignore_errors=True)
        if built.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            raise BadInput(
                f"{package} at {sha[:10]} does not install: {(built.stderr.strip().splitlines() or ['?'])[-1]}"
            )
        record = {"how": f"pip install --no-deps --target (tree of {sha[:10]})"}
    record.update(package=package, commit=sha)
    (staging / ".complete").write_text(json.dumps(record))
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(staging, folder)
    return folder, record
