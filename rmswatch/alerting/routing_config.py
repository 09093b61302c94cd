"""Receivers, the route tree and inhibition rules, as read from the config file.

Alertmanager's meanings throughout: matchers (`=`, `!=`, `=~`, `!~`), `continue`, `group_by`,
`group_wait`, `group_interval` and `repeat_interval`; durations as seconds or `30s`/`5m`/`4h`/`1d`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import ConfigDict, Field, field_validator, model_validator

from rmswatch._validation import StrictModel, Url, parse_duration

ReceiverKind = Literal["webhook", "slack", "pagerduty", "alertmanager"]
PAGERDUTY_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"

MatchOp = Literal["=", "!=", "=~", "!~"]
_MATCHER = re.compile(r"^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*(.*?)\s*$")


@dataclass(frozen=True, slots=True)
class Matcher:
    """One label matcher; a missing label matches as the empty string, as in Alertmanager."""

    name: str
    op: MatchOp
    value: str

    def __post_init__(self) -> None:
        if self.op in ("=~", "!~"):
            try:
                re.compile(self.value)
            except re.error as exc:
                raise ValueError(f"bad regex in matcher {self}: {exc}") from exc

    @classmethod
    def parse(cls, text: str) -> Matcher:
        """`job=resnet`, `severity!="ticket"`, `job=~"resnet-.*"`, `cluster!~eu-.*`."""
        match = _MATCHER.match(text)
        if match is None:
            raise ValueError(
                f"not a matcher: {text!r} (accepted: label=value, label!=value, "
                "label=~regex, label!~regex)"
            )
        name, op, value = match.groups()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        return cls(name, op, value)  # type: ignore[arg-type]

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.name, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        # Alertmanager anchors regexes at both ends
        found = re.fullmatch(self.value, actual) is not None
        return found if self.op == "=~" else not found

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "op": self.op, "value": self.value}

    def __str__(self) -> str:
        return f'{self.name}{self.op}"{self.value}"'


def parse_matchers(items: object) -> tuple[Matcher, ...]:
    """A list of matcher strings (or a `{label: value}` mapping of equality matchers)."""
    if items is None:
        return ()
    if isinstance(items, Mapping):
        return tuple(Matcher(str(k), "=", str(v)) for k, v in items.items())
    if isinstance(items, str):
        items = [items]
    if not isinstance(items, list | tuple):
        raise ValueError("matchers must be a list like ['severity=page', 'job=~\"resnet-.*\"']")
    return tuple(m if isinstance(m, Matcher) else Matcher.parse(str(m)) for m in items)


def matches_all(matchers: tuple[Matcher, ...], labels: Mapping[str, str]) -> bool:
    return all(m.matches(labels) for m in matchers)


class ReceiverConfig(StrictModel):
    """Where notifications go. Secrets are named by environment variable, never written here."""

    name: str = Field(min_length=1)
    kind: ReceiverKind = "webhook"
    # webhook/slack: the full URL; alertmanager: its base URL; pagerduty: Events v2 (default)
    url: Url | None = None
    # or read the URL from this environment variable (Slack webhook URLs are themselves secrets)
    url_env: str | None = None
    # HMAC-SHA256 signing secret for webhook bodies, read from this environment variable
    secret_env: str | None = None
    # PagerDuty integration (routing) key, read from this environment variable
    routing_key_env: str | None = None
    timeout_seconds: float = Field(default=10.0, gt=0)
    headers: dict[str, str] = Field(default_factory=dict)
    send_resolved: bool = True
    # at most this many alerts per webhook body (0: all); the rest are counted in truncatedAlerts
    max_alerts: int = Field(default=0, ge=0)
    # alertmanager: re-post firing alerts this often so Alertmanager's resolve_timeout never
    # resolves an alert that is still firing
    resend_seconds: float = Field(default=60.0, gt=0)

    @field_validator("timeout_seconds", "resend_seconds", mode="before")
    @classmethod
    def _duration(cls, value: object) -> float:
        return parse_duration(value)

    @model_validator(mode="after")
    def _url_required(self) -> ReceiverConfig:
        if self.url is None and self.url_env is None and self.kind != "pagerduty":
            raise ValueError(
                f"receiver {self.name!r} of kind {self.kind!r} needs a url (or url_env)"
            )
        if self.kind == "pagerduty" and not self.routing_key_env:
            raise ValueError(
                f"receiver {self.name!r} of kind 'pagerduty' needs routing_key_env "
                "(the environment variable holding the integration key)"
            )
        return self

    def target_url(self, environ: Mapping[str, str]) -> str:
        """The URL to POST to (KeyError naming the variable when `url_env` is unset)."""
        url = self.url
        if url is None and self.url_env is not None:
            url = environ[self.url_env]
        if url is None:
            return PAGERDUTY_EVENTS_URL
        if self.kind == "alertmanager" and not url.rstrip("/").endswith("/api/v2/alerts"):
            return url.rstrip("/") + "/api/v2/alerts"
        return url


def display_url(url: str) -> str:
    """scheme://host:port only: paths and queries of webhook URLs often carry tokens."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}/…"


class RouteConfig(StrictModel):
    """One node of the route tree; unset fields are inherited from the parent."""

    receiver: str | None = None
    matchers: tuple[Matcher, ...] = ()
    continue_: bool = Field(default=False, alias="continue")
    # ("...",) groups by every label, as in Alertmanager
    group_by: tuple[str, ...] | None = None
    group_wait: float | None = None
    group_interval: float | None = None
    repeat_interval: float | None = None
    routes: tuple[RouteConfig, ...] = ()

    model_config = ConfigDict(populate_by_name=True)

    @field_validator("matchers", mode="before")
    @classmethod
    def _matchers(cls, value: object) -> tuple[Matcher, ...]:
        return parse_matchers(value)

    @field_validator("group_wait", "group_interval", "repeat_interval", mode="before")
    @classmethod
    def _duration(cls, value: object) -> float | None:
        return None if value is None else parse_duration(value)


# Alertmanager's defaults for the root route
DEFAULT_GROUP_WAIT = 30.0
DEFAULT_GROUP_INTERVAL = 300.0
DEFAULT_REPEAT_INTERVAL = 4 * 3600.0


class InhibitRuleConfig(StrictModel):
    """Alerts matching `target_matchers` are muted while an alert matching `source_matchers`
    with the same values of the `equal` labels is firing."""

    source_matchers: tuple[Matcher, ...]
    target_matchers: tuple[Matcher, ...]
    equal: tuple[str, ...] = ()

    @field_validator("source_matchers", "target_matchers", mode="before")
    @classmethod
    def _matchers(cls, value: object) -> tuple[Matcher, ...]:
        return parse_matchers(value)


DEFAULT_INHIBIT_RULES: tuple[InhibitRuleConfig, ...] = (
    # a page already wakes someone up for this job; its tickets would only add noise
    InhibitRuleConfig(
        source_matchers=(Matcher("severity", "=", "page"),),
        target_matchers=(Matcher("severity", "=", "ticket"),),
        equal=("job",),
    ),
)


class OutboxConfig(StrictModel):
    """Retry policy of the notification outbox: exponential backoff, never giving up."""

    initial_backoff_seconds: float = Field(default=1.0, gt=0)
    max_backoff_seconds: float = Field(default=300.0, gt=0)
    # how often the sender looks for due notifications between evaluation ticks
    poll_seconds: float = Field(default=2.0, gt=0)

    @field_validator(
        "initial_backoff_seconds", "max_backoff_seconds", "poll_seconds", mode="before"
    )
    @classmethod
    def _duration(cls, value: object) -> float:
        return parse_duration(value)


def routing_problems(receivers: tuple[ReceiverConfig, ...], route: RouteConfig | None) -> list[str]:
    """Cross-field checks: unique receiver names, every route naming a known receiver."""
    names = [r.name for r in receivers]
    problems = [
        f"receivers: duplicate receiver name {name!r}"
        for name in sorted({n for n in names if names.count(n) > 1})
    ]
    known = ", ".join(sorted(set(names))) or "(none defined under receivers)"
    if route is None:
        return problems
    if route.receiver is None:
        problems.append(f"route.receiver: the root route needs a receiver (accepted: {known})")

    def visit(node: RouteConfig, key: str) -> None:
        if node.receiver is not None and node.receiver not in names:
            problems.append(
                f"{key}.receiver: unknown receiver {node.receiver!r} (accepted: {known})"
            )
        for index, child in enumerate(node.routes):
            visit(child, f"{key}.routes.{index}")

    visit(route, "route")
    return problems


def as_plain(value: Any) -> Any:
    """JSON-able form of config values that hold matchers (for logs and the UI)."""
    if isinstance(value, Matcher):
        return str(value)
    if isinstance(value, tuple | list):
        return [as_plain(v) for v in value]
    return value
