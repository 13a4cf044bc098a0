"""Reading and writing the files a user names: regular files only, a size cap, no output over an input.

Every file input is checked with ``stat`` before it is opened: a FIFO, device,
socket or directory is refused in one line without reading (a FIFO would block
and ``/dev/zero`` never ends), symbolic links count as what they point to, and
a file over the cap (``--max-input-bytes``, default 1 GiB; the largest golden is
about 100 kB) is refused. The open itself is non-blocking, so a file swapped
for a FIFO between the stat and the open cannot block either.

Outputs are written atomically (a temp file beside the target, then
``os.replace``) with the mode a plain ``open`` gives (0666 less the umask), and
an output that is one of the command's inputs is refused before anything runs.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from logitsmatch.errors import BadInput

DEFAULT_MAX_INPUT_BYTES = 1 << 30
_max_input_bytes = DEFAULT_MAX_INPUT_BYTES


def set_max_input_bytes(limit: int) -> None:
    """The cap every later ``read_input`` applies (the CLI's ``--max-input-bytes``)."""
    global _max_input_bytes
    if limit < 1:
        raise BadInput(f"--max-input-bytes must be a positive number of bytes, got {limit}")
    _max_input_bytes = limit


def max_input_bytes() -> int:
    return _max_input_bytes


def parse_size(text: str) -> int:
    """``--max-input-bytes`` values: bytes, or with a K/M/G suffix (powers of 1024)."""
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    value = text.strip().lower().removesuffix("b").removesuffix("i")
    scale = units.get(value[-1:], 1)
    try:
        number = int(value[:-1] if scale > 1 else value) * scale
    except ValueError:
        raise BadInput(f"--max-input-bytes must be a size such as 1073741824 or 1G, got {text!r}") from None
    if number < 1:
        raise BadInput(f"--max-input-bytes must be a positive size, got {text!r}")
    return number


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def check_regular(path: str | os.PathLike, what: str = "file") -> os.stat_result:
    """stat ``path`` (following links): BadInput unless it is a regular file within the size cap."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise BadInput(f"{path}: no such {what}") from None
    except OSError as exc:
        raise BadInput(f"{path}: cannot read: {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):
        target = f" (a link to {os.path.realpath(path)})" if os.path.islink(path) else ""
        raise BadInput(f"{path}: is {_kind(info.st_mode)}{target}, expected a regular {what}")
    if info.st_size > _max_input_bytes:
        raise BadInput(f"{path}: {info.st_size} bytes, over the input limit of {_max_input_bytes} "
                       "(raise it with --max-input-bytes)")
    return info


def check_interpreter(path: str | os.PathLike, option: str) -> None:
    """An interpreter the user names (a path, or a bare name found on PATH as the shell would): a regular, executable
    file (a FIFO or folder is refused before it is run)."""
    import shutil

    if os.sep not in str(path):
        path = shutil.which(str(path)) or path
    check_regular(path, f"file for {option}")
    if not os.access(path, os.X_OK):
        raise BadInput(f"{path}: not executable ({option} names an interpreter)")


def read_input(path: str | os.PathLike, what: str = "file") -> bytes:
    """The bytes of a regular file no larger than the cap; anything else is one BadInput line."""
    check_regular(path, what)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        raise BadInput(f"{path}: cannot read: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as handle:
        try:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):  # replaced between the stat and the open
                raise BadInput(f"{path}: is {_kind(info.st_mode)}, expected a regular {what}")
            data = _read_capped(handle, info.st_size)
        except OSError as exc:
            raise BadInput(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(data) > _max_input_bytes:
        raise BadInput(f"{path}: over the input limit of {_max_input_bytes} bytes (raise it with --max-input-bytes)")
    return data


def _read_capped(handle, size: int) -> bytes:
    """At most the cap plus one byte: the stated size in one read (asking for the cap would allocate it); a file
    that grew or states no size (a /proc file) is read on in chunks."""
    data = handle.read(min(size, _max_input_bytes) + 1)
    if len(data) <= size:  # a buffered read returns less than asked only at the end of the file
        return data
    chunks, read = [data], len(data)
    while read <= _max_input_bytes:
        chunk = handle.read(min(1 << 20, _max_input_bytes + 1 - read))
        if not chunk:
            break
        chunks.append(chunk)
        read += len(chunk)
    return b"".join(chunks)


def read_text_input(path: str | os.PathLike, what: str = "file") -> str:
    """``read_input`` as UTF-8 text; other bytes are one BadInput line naming the offset."""
    raw = read_input(path, what)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInput(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def refuse_output_over_inputs(outputs: Iterable[str | os.PathLike | None],
                              inputs: Iterable[str | os.PathLike | None]) -> None:
    """BadInput when an output path is (or resolves to) one of the inputs: a report never replaces its data."""
    sources = [Path(path) for path in inputs if path]
    for output in (Path(path) for path in outputs if path):
        for source in sources:
            if _same(output, source):
                raise BadInput(f"output {output} is the input {source}: refusing to overwrite an input")


def output_folder(path: str | os.PathLike) -> Path:
    """``path`` as a folder to write into, made if missing; a file or unwritable place is one BadInput line."""
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise BadInput(f"{folder}: exists and is not a folder (an output folder was expected)") from None
    except OSError as exc:
        raise BadInput(f"{folder}: cannot make the output folder: {exc.strerror or exc}") from None
    return folder


def creation_mode() -> int:
    """0666 less the process umask: the mode ``open(path, "w")`` gives a new file."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _name_limit(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike) -> Iterator[IO[bytes]]:
    """Write to a temp file beside ``path``, then ``os.replace`` it: readers never see half a file.

    The file gets the umask's mode (``mkstemp`` alone would leave 0600). A target that exists and is not
    a regular file (``/dev/null``, a terminal, a pipe, a link to ``/proc/self/fd/1``) is written through,
    never replaced. A name longer than the file system allows is bad input; the temp file's name is cut
    to fit whatever the target's length.
    """
    target = Path(path)
    try:
        info = os.stat(target)
    except FileNotFoundError:
        info = None
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            raise BadInput(f"{target}: the name is longer than this file system allows") from None
        raise BadInput(f"{target}: cannot write: {exc.strerror or exc}") from None
    if info is not None and stat.S_ISDIR(info.st_mode):
        raise BadInput(f"{target}: is a directory, expected a file to write")
    if info is not None and not stat.S_ISREG(info.st_mode):
        yield from _written_through(target)
        return
    folder = target.parent
    limit = _name_limit(folder)
    if len(os.fsencode(target.name)) > limit:
        raise BadInput(f"{target}: the name is {len(os.fsencode(target.name))} bytes, over this file system's "
                       f"limit of {limit}")
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name[:max(1, min(100, limit - 20))]}.", suffix=".tmp",
                                        dir=folder)
    except OSError as exc:
        raise BadInput(f"{target}: cannot write: {exc.strerror or exc}") from None
    try:
        os.fchmod(fd, creation_mode())
        with os.fdopen(fd, "wb") as handle:
            yield handle
        os.replace(tmp_name, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise BadInput(f"{target}: cannot write: {exc.strerror or exc}") from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise


def _written_through(target: Path) -> Iterator[IO[bytes]]:
    """An existing device, terminal or pipe opened for writing as it is (nothing to replace atomically)."""
    try:
        with open(target, "wb") as handle:
            yield handle
    except OSError as exc:
        raise BadInput(f"{target}: cannot write: {exc.strerror or exc}") from None


def write_atomic(path: str | os.PathLike, data: bytes | str) -> None:
    """``data`` (text as UTF-8) into ``path`` atomically."""
    with atomic_writer(path) as handle:
        handle.write(data.encode("utf-8", "backslashreplace") if isinstance(data, str) else data)


LOCK_FILE = ".logitsmatch.lock"


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, doing: str, wait: bool = True) -> Iterator[None]:
    """An exclusive ``fcntl`` lock on ``folder``'s lock file while one writer changes what the folder holds.

    ``wait``: queue behind another writer (a shared manifest: both writes land); otherwise a second
    writer is one BadInput line naming the first (two writers of one key: one wins). The lock file
    stays (removing it would let a third writer lock a file nobody else sees); it holds the holder.
    """
    import fcntl

    lock_path = output_folder(folder) / LOCK_FILE
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), creation_mode())
    except OSError as exc:
        raise BadInput(f"{lock_path}: cannot open the folder's lock: {exc.strerror or exc}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise BadInput(f"{Path(folder)} is being written by {_holder(fd)}: not {doing} at the same time") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} ({doing})\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock; the holder's line stays until the next holder writes its own


def _holder(fd: int) -> str:
    """The lock file's line naming a live holder, read again for up to a second while the holder that has just
    taken the lock has not written it yet."""
    import time

    for _ in range(20):
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
        pid = text.split()[1] if text.startswith("pid ") and len(text.split()) > 1 else ""
        if pid.isdigit():
            try:
                os.kill(int(pid), 0)
                return text
            except ProcessLookupError:
                pass
            except PermissionError:
                return text
        time.sleep(0.05)
    return "another process"
