"""Read, validate and atomically write files in Megatron's golden format.

A golden file maps request ids ("0", "1", ...) to request objects
(`generated_tokens`, `logprobs`, `generated_text`, ...) and may carry the
run-level keys Megatron's comparator knows (``NON_REQUEST_KEYS``); as there,
every other top-level key is a request id, and must hold an object. Every
problem with a file becomes one `BadInput` line that names the file, so the CLI
can exit 2 without a traceback.

orjson, when installed, parses about four times faster than the stdlib; files
it refuses (NaN/Infinity tokens, malformed text) go through the stdlib, which
accepts the NaN tokens Python writes and explains real errors. orjson reads an
integer beyond 64 bits as a float, so a file it parsed but that fails
validation is parsed again by the stdlib, whose exact integers word the error.
Token ids must fit in 64 bits (an id beyond is refused with that reason).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from logitsmatch.errors import BadInput

try:
    import orjson
except ImportError:  # optional accelerator; the stdlib gives the same results, slower
    orjson = None

# Top-level keys Megatron's inference comparator treats as run-level, not requests
# (its _NON_REQUEST_TOP_LEVEL_KEYS); every other key is a request id.
NON_REQUEST_KEYS = frozenset(
    {
        "throughput",
        "mem-max-allocated-bytes",
        "lifetime_prefill_token_count",
        "async_sched_step_count",
        "async_sched_compaction_step_count",
    }
)


def json_type(value: Any) -> str:
    """The JSON name of a parsed value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


class GoldenDocument(dict):
    """A document that passed validate_golden, so compare() need not check it again."""


def request_ids(doc: dict) -> list[str]:
    """Keys of `doc` that are request ids: every key outside the run-level ones, as in Megatron."""
    return [k for k in doc if k not in NON_REQUEST_KEYS]


def request_sort_key(rid: str) -> tuple:
    """Numeric request ids in numeric order, then the others by name."""
    return (0, int(rid), "") if rid.isdecimal() else (1, 0, rid)


def load_golden(path: str | os.PathLike) -> GoldenDocument:
    """Parse and validate one golden-format file; raise BadInput naming file and problem."""
    source = str(path)
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise BadInput(f"{source}: no such file") from None
    except IsADirectoryError:
        raise BadInput(f"{source}: is a directory, expected a JSON file") from None
    except OSError as exc:
        raise BadInput(f"{source}: cannot read: {exc.strerror or exc}") from None
    if not raw.strip():
        raise BadInput(f"{source}: empty file")
    if orjson is not None:
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass  # the stdlib accepts NaN tokens, and words errors well
        else:
            try:
                return validate_golden(parsed, source)
            except BadInput:
                pass  # the stdlib's exact integers give the accurate message
    return validate_golden(parse_json(raw, source), source)


def parse_json(raw: bytes, source: str) -> Any:
    """JSON text to Python objects with the stdlib: NaN/Infinity tokens and integers of any size."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadInput(f"{source}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadInput(
            f"{source}: malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    except RecursionError:
        raise BadInput(f"{source}: JSON nested too deeply") from None


def _unwrap(value: Any) -> Any:
    """A value that is JSON wrapped in a string (Megatron writes some) becomes that JSON."""
    if isinstance(value, str) and value.lstrip()[:1] in ("{", "["):
        try:
            return json.loads(value)
        except (json.JSONDecodeError, RecursionError):
            return value
    return value


def validate_golden(doc: Any, source: str) -> GoldenDocument:
    """Check the golden format; return the document with JSON-in-string values unwrapped."""
    if isinstance(doc, str):
        doc = _unwrap(doc)
    if not isinstance(doc, dict):
        raise BadInput(f"{source}: top level is {json_type(doc)}, expected an object of request ids")
    validated = GoldenDocument()
    for key, raw in doc.items():
        value = _unwrap(raw)
        if key in NON_REQUEST_KEYS:
            _check_run_value(source, key, value)
        elif isinstance(value, dict):
            _check_request(source, key, value)
        else:
            raise BadInput(
                f"{source}: request {_quoted(key)} is {json_type(value)}, expected an object "
                f"(every top-level key but {', '.join(sorted(NON_REQUEST_KEYS))} is a request id, as in Megatron)"
            )
        validated[key] = value
    if not request_ids(validated):
        raise BadInput(f"{source}: no requests (expected request ids mapping to objects)")
    return validated


def _quoted(text: str, limit: int = 60) -> str:
    """A key for a one-line message: quoted, shortened, with unprintable characters escaped."""
    shown = text if len(text) <= limit else text[:limit] + "..."
    return "'" + shown.encode("unicode_escape").decode("ascii").replace("'", "\\'") + "'"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_run_value(source: str, key: str, value: Any) -> None:
    if _is_number(value):
        return
    if isinstance(value, list) and all(_is_number(v) for v in value):
        return
    raise BadInput(f"{source}: '{key}' is {json_type(value)}, expected a number or a list of numbers")


def _check_request(source: str, rid: str, request: dict) -> None:
    where = f"{source}: request {_quoted(rid)}"
    tokens = request.get("generated_tokens")
    if "generated_tokens" in request:
        if not isinstance(tokens, list):
            raise BadInput(f"{where}: generated_tokens is {json_type(tokens)}, expected a list")
        _check_tokens(where, tokens)
    if "logprobs" in request:
        logprobs = request["logprobs"]
        if not isinstance(logprobs, list):
            raise BadInput(f"{where}: logprobs is {json_type(logprobs)}, expected a list of numbers")
        _check_numbers(where, "logprobs", logprobs)
        if isinstance(tokens, list) and len(logprobs) < len(tokens):
            raise BadInput(
                f"{where}: {len(logprobs)} logprobs for {len(tokens)} generated tokens "
                "(expected prompt logprobs followed by one per generated token)"
            )
    for text_field in ("generated_text", "input_prompt"):
        if text_field in request and not isinstance(request[text_field], str):
            raise BadInput(f"{where}: {text_field} is {json_type(request[text_field])}, expected a string")
    if "routing_indices" in request and not isinstance(request["routing_indices"], list):
        raise BadInput(f"{where}: routing_indices is {json_type(request['routing_indices'])}, expected a list")


def _check_tokens(where: str, tokens: list) -> None:
    """BadInput unless every token is a 64-bit integer (C-level checks first, then find the culprit)."""
    if set(map(type, tokens)) <= {int} and (not tokens or (min(tokens) >= -(2**63) and max(tokens) < 2**63)):
        return
    for i, token in enumerate(tokens):
        if type(token) is not int:
            raise BadInput(f"{where}: generated_tokens[{i}] is {json_type(token)}, expected an integer")
        if not -(2**63) <= token < 2**63:
            raise BadInput(f"{where}: generated_tokens[{i}] is an integer beyond 64 bits ({str(token)[:30]}): "
                           "token ids must fit in 64 bits")


def _check_numbers(where: str, name: str, values: list) -> None:
    """BadInput unless `values` holds only numbers that fit a float.

    Fast path: the C-level sum() rejects every non-number a JSON list can
    hold, and a float total means every element converted to float; an
    integer total (integers only, rare) gets the per-element scan for
    out-of-range values.
    """
    try:
        if isinstance(sum(values), float):
            return
    except (TypeError, OverflowError):
        pass
    for i, value in enumerate(values):
        if not _is_number(value):
            raise BadInput(f"{where}: {name}[{i}] is {json_type(value)}, expected a number")
        try:
            float(value)
        except OverflowError:
            raise BadInput(f"{where}: {name}[{i}] is an integer too large for a float") from None


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike) -> Iterator[IO[bytes]]:
    """Write to a temp file beside `path`, then os.replace it: readers never see half a file."""
    target = Path(path)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent or ".")
    except OSError as exc:
        raise BadInput(f"{target}: cannot write: {exc.strerror or exc}") from None
    try:
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


def _utf8_json(text: str, obj: Any, **options) -> bytes:
    """``text`` as UTF-8; a string UTF-8 cannot carry (a lone surrogate) makes it ASCII JSON, escaped."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(obj, ensure_ascii=True, **options).encode("ascii")


def json_float(value: float | None) -> float | str | None:
    """JSON has no NaN or infinity: reports spell them "nan", "inf", "-inf" (None stays null)."""
    if value is None or math.isfinite(value):
        return value
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as indented JSON atomically; NaN/Infinity stay tokens load_golden reads back."""
    with atomic_writer(path) as handle:
        handle.write(_utf8_json(json.dumps(obj, indent=1, ensure_ascii=False), obj, indent=1))
        handle.write(b"\n")


def dumps_json(obj: Any, indent: bool = False) -> bytes:
    """JSON bytes of finite data; orjson when available, as reports can hold millions of values.

    Strings that JSON can carry but UTF-8 cannot (lone surrogates) are written escaped.
    """
    if orjson is not None:
        try:
            return orjson.dumps(obj, option=orjson.OPT_INDENT_2 if indent else 0)
        except TypeError:  # orjson refuses lone surrogates; the stdlib escapes them
            pass
    options = {"indent": 2 if indent else None, "separators": None if indent else (",", ":"), "allow_nan": False}
    return _utf8_json(json.dumps(obj, ensure_ascii=False, **options), obj, **options)
