"""The project's error tree and the input rules every boundary shares.

A leaf: it imports nothing from rmswatch, so any room may use it. One duration grammar
(`parse_duration`), one URL rule (`check_url`), one strict pydantic base (`StrictModel`) and one
way to word a validation error (`format_validation_error`). Every error rmswatch raises on
purpose derives from `RmswatchError`; the CLI prints one as one line and exits with code 2::

    RmswatchError                      root: catch this to catch everything raised on purpose
    ├── ArgumentError    (ValueError)  a bad argument to a public function or a CLI command
    ├── ConfigError      (ValueError)  a config or spec file: names the file, key, value, accepted
    ├── WireError        (ValueError)  an ingest batch: names the first bad field
    ├── DeliveryError                  a receiver did not accept a notification (no secrets)
    ├── StoreError                     the store can't be opened or used: names the URL's problem
    └── CheckpointError                a checkpoint can't be saved or loaded: names file and reason

The `ValueError` bases keep `except ValueError` catchers working where those errors were
`ValueError`s before the tree existed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError


class RmswatchError(Exception):
    """Root of every error rmswatch raises on purpose; its message is meant for a person."""


class ArgumentError(RmswatchError, ValueError):
    """A bad argument; the message names the argument, the value given and what is accepted."""


class ConfigError(RmswatchError, ValueError):
    """A config file that can't be used; the message names file, key, value and what's accepted.

    One line: `path: invalid config: key: problem (got: value); other.key: ...`.
    """

    def __init__(self, path: str, problems: Sequence[str]) -> None:
        self.path = path
        self.problems = list(problems)
        super().__init__(f"{path}: invalid config: " + "; ".join(self.problems))


class WireError(RmswatchError, ValueError):
    """A batch that can't be ingested; `field` is the path of the first bad value."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class DeliveryError(RmswatchError):
    """A notification was not accepted; the message never contains a secret or the body."""


class StoreError(RmswatchError):
    """The store can't be opened or used (a malformed URL, an unknown backend, no migrations)."""


class CheckpointError(RmswatchError):
    """A checkpoint that can't be saved or loaded; `path` is the file, `reason` says why."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


# -- durations --------------------------------------------------------------------------------

_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_NUMBER = r"\d+(?:\.\d+)?"
# a bare number of seconds, or one or more <number><unit> parts: 90, 30s, 1h30m, 1.5d, 500ms
_DURATION = re.compile(rf"^\s*(?:{_NUMBER}|(?:{_NUMBER}\s*(?:ms|s|m|h|d|w)\s*)+)$")
_DURATION_PART = re.compile(rf"({_NUMBER})\s*(ms|s|m|h|d|w)?")
DURATION_HELP = "a number of seconds or e.g. 30s, 5m, 1h, 30d, 1h30m, 500ms"


def parse_duration(value: object) -> float:
    """Seconds from a number or a Prometheus-style duration: `90`, `30s`, `1h30m`, `2d`, `500ms`.

    The one duration grammar of every config key, SLO period and CLI flag. Refuses booleans,
    negative numbers, NaN and infinities (YAML's `.nan`, `.inf`) with a ValueError naming what
    is accepted, so pydantic reports it under the key.
    """
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r} (accepted: {DURATION_HELP})")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and _DURATION.match(value):
        seconds = sum(
            float(number) * _UNIT_SECONDS[unit or "s"]
            for number, unit in _DURATION_PART.findall(value)
        )
    else:
        raise ValueError(f"not a duration: {value!r} (accepted: {DURATION_HELP})")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(
            f"a duration must be a finite number of seconds >= 0, not {value!r}"
            f" (accepted: {DURATION_HELP})"
        )
    return seconds


def format_duration(seconds: float) -> str:
    """Seconds -> the shortest Prometheus duration (whole seconds, at least 1s)."""
    whole = max(1, round(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if whole % size == 0:
            return f"{whole // size}{unit}"
    return f"{whole}s"


Duration = Annotated[float, BeforeValidator(parse_duration)]
PositiveDuration = Annotated[Duration, Field(gt=0)]


# -- URLs -------------------------------------------------------------------------------------

URL_HELP = "an absolute http:// or https:// URL, e.g. https://host:8050"


def check_url(value: str) -> str:
    """An absolute http(s) URL with a host and, if given, a port in 1-65535; else ValueError.

    The one URL rule of `server.external_url`, `evaluation.runbook_base_url` and the receivers.
    IPv6 literals are written in brackets: `http://[::1]:9099/hook`.
    """
    problem = _url_problem(value)
    if problem:
        raise ValueError(f"malformed URL {value!r}: {problem} (accepted: {URL_HELP})")
    return value


def _url_problem(value: str) -> str | None:
    if any(c.isspace() for c in value):
        return "it contains whitespace"
    try:
        parts = urlsplit(value)
        port = parts.port  # urlsplit checks the port only when asked
    except ValueError as exc:
        return str(exc)
    if parts.scheme not in ("http", "https"):
        return "the scheme must be http or https"
    if not parts.hostname:
        return "it has no host"
    if port is not None and not 1 <= port <= 65535:
        return f"port {port} is outside 1-65535"
    return None


Url = Annotated[str, AfterValidator(check_url)]


# -- models -----------------------------------------------------------------------------------


class StrictModel(BaseModel):
    """The base of every config and spec model: unknown keys are errors, instances are frozen.

    A typo in a config file is then an error at load, never a silently ignored setting.
    (`arbitrary_types_allowed` lets routing models hold parsed `Matcher`s.)
    """

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


def format_validation_error(error: ValidationError) -> list[str]:
    """One line per problem: `key.path: message (got: value)`."""
    lines = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        got = item.get("input")
        shown = "" if isinstance(got, dict | list) else f" (got: {got!r})"
        lines.append(f"{key}: {message}{shown}")
    return lines
