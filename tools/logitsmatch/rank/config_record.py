"""The configuration objects a rank computes with, as plain data: a harness input ``explain`` compares.

What the harness sets in megatron-core's ``TransformerConfig`` and inference configs, and what a
release sets differently by default, can move results as much as a package: 0.18+ needs
``inference_moe_token_dispatcher_type="nccl"`` on CPU with EP > 1, a field older releases lack.
So every field is recorded with its value, and the fields whose value is not the release's
default are named: a field one side lacks is a difference only when the other side's value is
not its default.
"""

from __future__ import annotations

import dataclasses
import enum

_NO_DEFAULT = object()


def _plain(value):
    """A JSON value that names ``value`` the same way in every process (no addresses)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, enum.Enum):
        return f"{type(value).__name__}.{value.name}"
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if callable(value) and hasattr(value, "__qualname__"):
        return f"{getattr(value, '__module__', '?')}.{value.__qualname__}"
    if type(value).__module__ == "torch" or str(value).startswith("torch."):
        return str(value)  # dtypes, devices
    return f"<{type(value).__module__}.{type(value).__qualname__}>"


def _default(item: dataclasses.Field):
    if item.default is not dataclasses.MISSING:
        return item.default
    if item.default_factory is not dataclasses.MISSING:
        return item.default_factory()
    return _NO_DEFAULT


def _same(value, default) -> bool:
    try:
        return bool(value == default)
    except Exception:  # a tensor or an object without a plain equality
        return False


def dataclass_record(config) -> dict:
    """``{"type", "values": {field: value}, "not_default": [fields]}`` of a dataclass instance."""
    values, not_default = {}, []
    for item in dataclasses.fields(config):
        value = getattr(config, item.name, None)
        values[item.name] = _plain(value)
        default = _default(item)
        if default is _NO_DEFAULT or not _same(value, default):
            not_default.append(item.name)
    return {"type": f"{type(config).__module__}.{type(config).__qualname__}", "values": values,
            "not_default": not_default}
