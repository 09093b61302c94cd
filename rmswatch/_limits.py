"""What every store accepts: the one table of limits that `watch()`, the sinks and ingest check.

A leaf module (imports only the leaf `rmswatch._validation`). The limits are the narrowest of
SQLite and PostgreSQL, so a value that passes here is stored the same way on both, and over
HTTP. The table is `LIMITS`; docs/store.md ("Limits") shows it and a test keeps the two equal.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rmswatch._validation import RmswatchError

INT32_MAX = 2**31 - 1  # PostgreSQL `integer`
INT64_MAX = 2**63 - 1  # PostgreSQL `bigint`, SQLite INTEGER
# Python's datetime ends at 9999-12-31; PostgreSQL's timestamptz goes further, SQLite stores text
TIME_MAX = 253_402_300_799.0
JSON_MAX_DEPTH = 32  # hyperparameter values: plain nesting, far from any recursion limit
MAX_LABELS = 64


class LimitError(RmswatchError, ValueError):
    """A value outside what rmswatch accepts; `field` names it, `limit` says what is accepted."""

    def __init__(self, field: str, limit: str, value: Any = None) -> None:
        self.field = field
        self.limit = limit
        shown = _show(value)
        super().__init__(f"{field}: {limit}" + (f" (got {shown})" if shown else ""))


@dataclass(frozen=True, slots=True)
class Limit:
    """One row of the limits table: what a field accepts, and where it applies."""

    fields: str
    accepts: str
    store: str


LIMITS: tuple[Limit, ...] = (
    Limit("job", "text, 1-256 characters, no control characters", "varchar(256)"),
    Limit("run_id", "text, 1-128 characters, no control characters", "varchar(128)"),
    Limit("labels", f"a mapping of at most {MAX_LABELS} str keys to str values", "JSON"),
    Limit("label key", "text, 1-128 characters, no control characters", "JSON"),
    Limit("label value", "text, 0-1024 characters, no NUL", "JSON"),
    Limit("layer name", "text, 1-512 characters, no control characters", "varchar(512)"),
    Limit("validation / SLI name", "text, 1-128 characters, no control characters", "varchar(128)"),
    Limit("host", "text, 0-256 characters, no NUL", "varchar(256)"),
    Limit("optimizer", "text, 0-128 characters, no NUL", "varchar(128)"),
    Limit("layer dtype", "text, 0-64 characters, no NUL", "JSON"),
    Limit("checkpoint path", "text, 0-4096 characters, no NUL", "text"),
    Limit(
        "detail (run status, checkpoint)",
        "text; NUL becomes U+FFFD, cut to 4096 characters (never refused)",
        "text",
    ),
    Limit(
        "time, started_at", f"finite seconds since the epoch, 0 to {TIME_MAX:.0f}", "timestamptz"
    ),
    Limit("step, resumed_from_step", f"integer, 0 to {INT64_MAX}", "bigint"),
    Limit(
        "counts (nonfinite_*, dropped_total, size_bytes, rss_bytes, gpu_memory_bytes, "
        "histogram counts, numel)",
        f"integer, 0 to {INT64_MAX}",
        "bigint",
    ),
    Limit("pid, rank, gpu_count, group", f"integer, 0 to {INT32_MAX}", "integer"),
    Limit("world_size, every", f"integer, 1 to {INT32_MAX}", "integer"),
    Limit(
        "measurements (loss, norms, lr, values)", "any float, NaN and ±Infinity included", "float"
    ),
    Limit("hyperparameters", f"JSON values nested at most {JSON_MAX_DEPTH} deep", "JSON"),
)


class _TypeOf:
    """Shown as the bare type name in "(got int)" when the type, not the value, is wrong."""

    def __init__(self, value: Any) -> None:
        self.name = type(value).__name__

    def __repr__(self) -> str:
        return self.name


def _show(value: Any) -> str:
    if value is None:
        return ""
    text = repr(value)
    return (
        text
        if len(text) <= 60
        else f"{text[:40]}... ({len(value) if hasattr(value, '__len__') else '?'} long)"
    )


def _bad_character(value: str, *, control: bool) -> str | None:
    if "\x00" in value:
        return "NUL"
    if control and any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        return "a control character"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "a lone surrogate (not UTF-8)"
    return None


def check_text(
    field: str, value: Any, max_length: int, *, min_length: int = 1, control: bool = True
) -> str:
    """`value` if it is a str of `min_length`..`max_length` characters every store can hold."""
    accepted = f"text of {min_length}-{max_length} characters" + (
        ", no control characters" if control else ", no NUL"
    )
    if not isinstance(value, str):
        raise LimitError(field, f"expected {accepted}", _TypeOf(value))
    if not min_length <= len(value) <= max_length:
        raise LimitError(field, f"{len(value)} characters; expected {accepted}", value)
    bad = _bad_character(value, control=control)
    if bad is not None:
        raise LimitError(field, f"contains {bad}; expected {accepted}", value)
    return value


def clean_detail(value: str, max_length: int = 4096) -> str:
    """Free text that is never refused (a crash's message matters): NUL replaced, then cut."""
    value = value.replace("\x00", "\ufffd")
    value = value.encode("utf-8", "replace").decode("utf-8")
    return value[:max_length]


def check_int(field: str, value: Any, low: int = 0, high: int = INT64_MAX) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise LimitError(field, f"expected an integer from {low} to {high}", _TypeOf(value))
    if not low <= value <= high:
        raise LimitError(field, f"expected an integer from {low} to {high}", value)
    return value


def check_time(field: str, value: Any) -> float:
    """Seconds since the epoch that every store turns into a timestamp."""
    limit = f"expected finite seconds since the epoch, 0 to {TIME_MAX:.0f}"
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise LimitError(field, limit, _TypeOf(value))
    if not (math.isfinite(value) and 0 <= value <= TIME_MAX):
        raise LimitError(field, limit, value)
    return float(value)


def check_float(field: str, value: Any) -> float:
    """A measurement: any float (NaN and infinities are data), but a number."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise LimitError(field, "expected a number", _TypeOf(value))
    try:
        return float(value)
    except OverflowError:  # an int beyond float range
        raise LimitError(field, "expected a number in float range", value) from None


def check_labels(field: str, value: Any) -> dict[str, str]:
    """A mapping of str to str, within the label limits; a copy."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise LimitError(
            field,
            'expected a mapping of str to str, like {"cluster": "a100"}',
            _TypeOf(value),
        )
    if len(value) > MAX_LABELS:
        raise LimitError(field, f"{len(value)} labels; at most {MAX_LABELS}")
    labels: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str):
            raise LimitError(f"{field} key {key!r}", "label keys must be str", _TypeOf(key))
        check_text(f"{field} key {json.dumps(key)}", key, 128)
        where = f"{field}[{json.dumps(key)}]"
        if not isinstance(item, str):
            raise LimitError(
                where,
                f"label values must be str (write str({item!r}) if you meant it)",
                _TypeOf(item),
            )
        labels[key] = check_text(where, item, 1024, min_length=0, control=False)
    return labels


def check_json_depth(field: str, value: Any, max_depth: int = JSON_MAX_DEPTH) -> Any:
    """`value` unless lists/mappings nest deeper than `max_depth` (checked without recursion)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, Mapping | list | tuple):
            if depth >= max_depth:
                raise LimitError(field, f"nested deeper than {max_depth} levels")
            children = item.values() if isinstance(item, Mapping) else item
            stack.extend((child, depth + 1) for child in children)
    return value
