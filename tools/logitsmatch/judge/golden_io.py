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
A key a parser would drop (a duplicate request id) is found by counting keys in
the text; a file where the count does not match goes through the stdlib, which
names the duplicate. Types come before numbers: logprobs are numbers (not
booleans), token and expert ids non-negative integers within 64 bits (not
floats, not booleans); a culprit is named with its deepdiff path.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

from logitsmatch.errors import BadInput
from logitsmatch.files import atomic_writer, read_input
from logitsmatch.judge.figures import plural

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


def deepdiff_path(*elements: str | int) -> str:
    """The path deepdiff prints for a place in a golden document: ``root['17']['logprobs'][51]`` (a key holding
    ' in double quotes, as deepdiff.path.stringify_element writes it); load errors and reports name places so."""
    return "root" + "".join(
        f"[{e}]" if isinstance(e, int) else (f'["{e}"]' if "'" in e else f"['{e}']") for e in elements
    )
def request_sort_key(rid: str) -> tuple:
    """Numeric request ids in numeric order, then the others by name."""
    return (0, int(rid), "") if rid.isdecimal() else (1, 0, rid)


def load_golden(path: str | os.PathLike) -> GoldenDocument:
    """Parse and validate one golden-format file; raise BadInput naming file and problem.

    A regular file within the input cap only (``logitsmatch.files.read_input``). A file whose
    JSON is a string is parsed once more, as Megatron's comparator reads it (``json.loads``
    twice when the first gives a str).
    """
    source = str(path)
    raw = read_input(path)
    if not raw.strip():
        raise BadInput(f"{source}: empty file")
    doc, exact = _parse(raw, source)
    if isinstance(doc, str):
        doc, exact = _parse(doc, source)
    if exact:
        return validate_golden(doc, source)
    try:
        return validate_golden(doc, source)
    except BadInput:  # orjson reads an integer beyond 64 bits as a float: the stdlib's exact integers word it
        doc = parse_json(raw, source)
        return validate_golden(parse_json(doc, source) if isinstance(doc, str) else doc, source)


def _parse(data: bytes | str, source: str) -> tuple[Any, bool]:
    """(document, parsed exactly by the stdlib): orjson when it can and the text cannot hide a
    duplicate key, else the stdlib, which checks for one."""
    if orjson is not None:
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            pass  # the stdlib accepts NaN tokens, and words errors well
        else:
            if isinstance(doc, str) or _keys_accounted_for(data, doc):
                return doc, False
    return parse_json(data, source), True


def _keys_accounted_for(data: bytes | str, doc: Any) -> bool:
    """True when the text holds no more keys than the parsed top two levels: no key was dropped.

    Every key is a string followed by ':', so the text has at least as many '":' as keys, and
    more only when a key was duplicated (a parser keeps the last), an object sits deeper than
    a request, or a string holds '":' itself; those rare files go through the stdlib, which checks.
    """
    if type(doc) is not dict:
        return not isinstance(doc, list)  # a top-level list is refused anyway; let the stdlib word it
    keys = len(doc) + sum(len(value) for value in doc.values() if type(value) is dict)
    return data.count(b'":' if isinstance(data, bytes) else '":') == keys


def parse_json(raw: bytes | str, source: str) -> Any:
    """JSON text to Python objects with the stdlib: NaN/Infinity tokens, integers of any size,
    and a duplicate key (which a parser would silently drop) refused naming it."""
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise BadInput(f"{source}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    else:
        text = raw
    duplicates: list[tuple[str, dict]] = []

    def pairs_hook(pairs: list[tuple[str, Any]]) -> dict:
        obj = dict(pairs)
        if len(obj) != len(pairs):
            seen: set[str] = set()
            duplicates.append((next(key for key, _ in pairs if key in seen or seen.add(key)), obj))
        return obj

    try:
        doc = json.loads(text, object_pairs_hook=pairs_hook)
    except json.JSONDecodeError as exc:
        raise BadInput(
            f"{source}: malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    except RecursionError:
        raise BadInput(f"{source}: JSON nested too deeply") from None
    if duplicates:
        key, obj = duplicates[0]
        if obj is doc:
            raise BadInput(f"{source}: request id {_quoted(key)} appears twice (a JSON parser keeps only the last)")
        owner = next((rid for rid, value in doc.items() if value is obj), None) if type(doc) is dict else None
        where = f"request {_quoted(owner)}: " if owner is not None else ""
        raise BadInput(f"{source}: {where}key {_quoted(key)} appears twice in one object "
                       "(a JSON parser keeps only the last)")
    return doc


def _unwrap(value: Any) -> Any:
    """A request that is JSON wrapped in a string becomes that JSON (a duplicate key in it is refused too)."""
    if isinstance(value, str) and value.lstrip()[:1] in ("{", "["):
        try:
            return parse_json(value, "")
        except BadInput:
            return value
    return value


def validate_golden(doc: Any, source: str) -> GoldenDocument:
    """Check the golden format; return the document with JSON-in-string requests unwrapped."""
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


_ID_FIELDS = ("routing_indices", "routing_indices_token_indices")


def _check_request(source: str, rid: str, request: dict) -> None:
    where = f"{source}: request {_quoted(rid)}"
    tokens = request.get("generated_tokens")
    if "generated_tokens" in request:
        if not isinstance(tokens, list):
            raise BadInput(f"{where}: generated_tokens is {json_type(tokens)}, expected a list")
        _check_ids(where, rid, ("generated_tokens",), tokens)
    if "logprobs" in request:
        logprobs = request["logprobs"]
        if not isinstance(logprobs, list):
            raise BadInput(f"{where}: logprobs is {json_type(logprobs)}, expected a list of numbers")
        _check_numbers(where, rid, "logprobs", logprobs)
        if isinstance(tokens, list) and len(logprobs) < len(tokens):
            raise BadInput(
                f"{where}: {plural(len(logprobs), 'logprob')} for {plural(len(tokens), 'generated token')} "
                "(expected prompt logprobs followed by one per generated token)"
            )
    for text_field in ("generated_text", "input_prompt"):
        if text_field in request and not isinstance(request[text_field], str):
            raise BadInput(f"{where}: {text_field} is {json_type(request[text_field])}, expected a string")
    for field in _TOP_N_FIELDS:
        if request.get(field) is not None:
            _check_top_n(where, rid, field, request[field])
    for field in _ID_FIELDS:
        if field in request:
            if not isinstance(request[field], list):
                raise BadInput(f"{where}: {field} is {json_type(request[field])}, expected a list")
            _check_ids(where, rid, (field,), request[field])


# megatron-core's top-n logprobs, as Megatron's driver writes them: per position {token text: logprob}, or null
_TOP_N_FIELDS = ("top_n_logprobs", "prompt_top_n_logprobs")


def _check_top_n(where: str, rid: str, field: str, positions: Any) -> None:
    if not isinstance(positions, list):
        raise BadInput(f"{where}: {field} is {json_type(positions)}, expected a list of objects")
    for index, entry in enumerate(positions):
        if not isinstance(entry, dict):
            raise BadInput(f"{where}: {field}[{index}] is {json_type(entry)}, expected an object "
                           f"(at {deepdiff_path(rid, field, index)})")
        for token, value in entry.items():
            if not _is_number(value):
                raise BadInput(f"{where}: {field}[{index}][{_quoted(token)}] is {json_type(value)}, expected a "
                               f"number (at {deepdiff_path(rid, field, index, token)})")


_INT = {int}
_LIST = {list}
_FLOAT = {float}
_MAX_ID_DEPTH = 4  # routing_indices: [tokens, layers, top-k]


def _check_ids(where: str, rid: str, at: tuple, values: list) -> None:
    """BadInput unless ``values`` (lists of lists allowed) holds only integers in [0, 2**63).

    Token and expert ids: a float (even 3.0), a boolean or a negative number is refused naming its
    deepdiff path. The type test is one C-level pass per list; the culprit is searched only on failure.
    """
    types = set(map(type, values))
    if types <= _INT:
        if not values or (min(values) >= 0 and max(values) < 2**63):
            return
    elif types <= _LIST and len(at) < _MAX_ID_DEPTH:
        for index, inner in enumerate(values):
            _check_ids(where, rid, (*at, index), inner)
        return
    def name(*index: int) -> str:
        return "".join(f"[{e}]" if isinstance(e, int) else e for e in (*at, *index))

    lists = [index for index, value in enumerate(values) if type(value) is list]
    if lists and len(at) >= _MAX_ID_DEPTH:
        raise BadInput(f"{where}: {name(lists[0])} is nested too deeply (at {deepdiff_path(rid, *at, lists[0])})")
    if lists and len(lists) < len(values):
        other = next(index for index, value in enumerate(values) if type(value) is not list)
        raise BadInput(f"{where}: {name()} mixes ids and lists at one depth ({name(other)} is "
                       f"{json_type(values[other])}, {name(lists[0])} a list) (at {deepdiff_path(rid, *at, other)})")
    for index, value in enumerate(values):
        path = deepdiff_path(rid, *at, index)
        if type(value) is not int:
            raise BadInput(f"{where}: {name(index)} is {json_type(value)}, expected an integer (at {path})")
        if value < 0:
            raise BadInput(f"{where}: {name(index)} is {value}, expected a non-negative integer id (at {path})")
        if value >= 2**63:
            raise BadInput(f"{where}: {name(index)} is an integer beyond 64 bits ({str(value)[:30]}): "
                           f"ids must fit in 64 bits (at {path})")


def _check_numbers(where: str, rid: str, name: str, values: list) -> None:
    """BadInput unless ``values`` holds only numbers (not booleans) that fit a float.

    Fast path: one C-level pass collects the element types; floats only (the usual case) is
    done. Anything else gets the per-element scan, which names the first culprit.
    """
    if set(map(type, values)) <= _FLOAT:
        return
    for i, value in enumerate(values):
        path = deepdiff_path(rid, name, i)
        if not _is_number(value):
            raise BadInput(f"{where}: {name}[{i}] is {json_type(value)}, expected a number (at {path})")
        try:
            float(value)
        except OverflowError:
            raise BadInput(f"{where}: {name}[{i}] is an integer too large for a float (at {path})") from None


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
