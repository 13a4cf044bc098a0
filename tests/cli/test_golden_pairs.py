"""A golden and its sidecar are one record: after a kill at any point of a write, a full disk or a second
writer, both files are the old pair or both the new pair, and no temp file is left once the folder is
next locked."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from logitsmatch import golden_pairs
from logitsmatch.errors import BadInput
from logitsmatch.files import folder_lock
from logitsmatch.paths import provenance_path
from support import PROJECT

OLD, NEW = b'{"0": {"generated_tokens": [1]}}\n', b'{"0": {"generated_tokens": [2]}}\n'


def pair_of(golden: Path) -> tuple[bytes, dict]:
    return golden.read_bytes(), json.loads(provenance_path(golden).read_text())


def recorded_old(folder: Path) -> Path:
    golden = folder / "golden_values_cpu_t.json"
    golden_pairs.write_pair(golden, OLD, {"toolchain": "old"})
    return golden


def leftovers(folder: Path) -> list[str]:
    names = (path.name for path in folder.iterdir())
    return sorted(name for name in names if name.startswith(".") and name != ".logitsmatch.lock")


def test_a_written_pair_records_the_golden_sha256_and_checks_clean(tmp_path):
    golden = recorded_old(tmp_path)
    body, sidecar = pair_of(golden)
    assert body == OLD and sidecar["toolchain"] == "old"
    assert golden_pairs.mismatch(golden) is None
    assert leftovers(tmp_path) == []


def test_a_golden_changed_by_hand_is_named_as_not_matching_its_sidecar(tmp_path):
    golden = recorded_old(tmp_path)
    golden.write_bytes(NEW)
    problem = golden_pairs.mismatch(golden)
    assert problem is not None and "does not match its sidecar" in problem


# Where the writer dies: each os.replace call of write_pair is numbered; the child SIGKILLs itself
# instead of making call number N (0 = the commit marker, 1 = the sidecar, 2 = the golden).
KILLED_WRITER = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from logitsmatch import golden_pairs
    calls, real_replace = [0], os.replace
    def dying_replace(a, b):
        if calls[0] == int(sys.argv[2]):
            os.kill(os.getpid(), signal.SIGKILL)
        calls[0] += 1
        return real_replace(a, b)
    os.replace = dying_replace
    golden_pairs.write_pair(Path(sys.argv[1]), b'{"0": {"generated_tokens": [2]}}\\n', {"toolchain": "new"})
""")


@pytest.mark.parametrize("killed_at, expected", [(0, "old"), (1, "new"), (2, "new")])
def test_a_writer_killed_at_any_rename_leaves_one_whole_pair(tmp_path, killed_at, expected):
    golden = recorded_old(tmp_path)
    child = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(golden), str(killed_at)],
                           env={**os.environ, "PYTHONPATH": str(PROJECT / "tools")}, timeout=60)
    assert child.returncode == -signal.SIGKILL
    assert golden_pairs.mismatch(golden) is None  # the check finishes or drops the interrupted write
    body, sidecar = pair_of(golden)
    assert (body, sidecar["toolchain"]) == ((OLD, "old") if expected == "old" else (NEW, "new"))
    assert leftovers(tmp_path) == []


def test_a_second_writer_of_the_same_golden_is_refused_naming_the_first(tmp_path):
    golden = recorded_old(tmp_path)
    with folder_lock(tmp_path, "recording by hand", wait=False):
        with pytest.raises(BadInput, match="is being written by pid .*recording by hand"):
            golden_pairs.write_pair(golden, NEW, {"toolchain": "new"})
    assert pair_of(golden)[0] == OLD and golden_pairs.mismatch(golden) is None


def test_a_full_disk_leaves_the_old_pair_and_no_temp_file(tmp_path):
    """A tmpfs with room for the sidecar but not the golden (CI runs as root and may mount one)."""
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("CI is set: this test mounts a tmpfs and needs root", pytrace=False)
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], check=True)
    try:
        golden = recorded_old(mount)
        with pytest.raises(BadInput, match="cannot write: No space left on device"):
            golden_pairs.write_pair(golden, b"[" + b"1," * 40_000 + b"1]\n", {"toolchain": "new"})
        assert pair_of(golden) == (OLD, pair_of(golden)[1]) and pair_of(golden)[1]["toolchain"] == "old"
        assert golden_pairs.mismatch(golden) is None
        assert leftovers(mount) == []
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_verify_names_each_golden_that_is_not_one_record_and_exits_2(tmp_path):
    from support import run_logitsmatch

    clean = recorded_old(tmp_path / "a")
    changed = recorded_old(tmp_path / "b")
    changed.write_bytes(NEW)
    wrong_type = recorded_old(tmp_path / "c")
    sidecar = json.loads(provenance_path(wrong_type).read_text())
    sidecar["hardware"] = {"class": 7}
    provenance_path(wrong_type).write_text(json.dumps(sidecar))
    completed = run_logitsmatch("verify", str(tmp_path))
    assert completed.returncode == 2, completed.stderr
    named = [line for line in completed.stdout.splitlines() if "NOT ONE RECORD" in line]
    assert len(named) == 2 and str(changed) in named[0] and "hardware.class is int" in named[1]
    assert "verified 3 golden(s): 1 one record" in completed.stdout and str(clean) not in completed.stdout
    assert run_logitsmatch("verify", str(tmp_path / "a")).returncode == 0
    assert run_logitsmatch("verify").returncode == 0  # the committed goldens
