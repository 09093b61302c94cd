"""Bad receiver/route config is rejected at load, naming the file, the key and what's accepted."""

from __future__ import annotations

from pathlib import Path

import pytest

from rmswatch._validation import parse_duration
from rmswatch.alerting.routing_config import Matcher
from rmswatch.config import ConfigError, load_config


def load(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "rmswatch.yaml"
    path.write_text(text)
    return load_config(path)


def problems(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    message = str(caught.value)
    assert str(tmp_path / "rmswatch.yaml") in message
    return message


GOOD = """
receivers:
  - {name: oncall, kind: webhook, url: "http://127.0.0.1:9099/hook", secret_env: HOOK_SECRET}
  - {name: pd, kind: pagerduty, routing_key_env: PD_KEY}
route:
  receiver: oncall
  group_by: [job]
  group_wait: 30s
  repeat_interval: 4h
  routes:
    - matchers: ['severity="page"', 'job=~"resnet-.*"']
      receiver: pd
      continue: true
"""


def test_example_route_loads_with_alertmanager_defaults_and_durations(tmp_path: Path) -> None:
    cfg = load(tmp_path, GOOD)
    assert (
        cfg.route is not None and cfg.route.group_wait == 30 and cfg.route.repeat_interval == 14400
    )
    child = cfg.route.routes[0]
    assert child.continue_ and child.matchers == (
        Matcher("severity", "=", "page"), Matcher("job", "=~", "resnet-.*"),
    )  # fmt: skip
    [rule] = cfg.inhibit_rules  # the default: a page inhibits the ticket of the same job
    assert rule.equal == ("job",)


def test_route_naming_an_unknown_receiver_is_rejected(tmp_path: Path) -> None:
    message = problems(tmp_path, GOOD.replace("receiver: pd", "receiver: pagerduty"))
    assert "route.routes.0.receiver: unknown receiver 'pagerduty' (accepted: oncall, pd)" in message


def test_malformed_url_is_rejected_naming_the_key(tmp_path: Path) -> None:
    message = problems(tmp_path, GOOD.replace("http://127.0.0.1:9099/hook", "127.0.0.1:9099"))
    assert (
        "receivers.0.url" in message and "accepted: an absolute http:// or https:// URL" in message
    )


def test_unknown_kind_and_unknown_key_are_rejected(tmp_path: Path) -> None:
    message = problems(tmp_path, GOOD.replace("kind: webhook", "kind: email"))
    assert "receivers.0.kind" in message and "'webhook'" in message
    message = problems(tmp_path, GOOD.replace("group_by: [job]", "group_by: [job]\n  grop: 1"))
    assert "route.grop: unknown key" in message


def test_bad_matcher_and_bad_duration_are_rejected(tmp_path: Path) -> None:
    message = problems(tmp_path, GOOD.replace('severity="page"', "severity~page"))
    assert "not a matcher" in message and "label=~regex" in message
    message = problems(tmp_path, GOOD.replace("group_wait: 30s", "group_wait: soon"))
    assert "route.group_wait" in message and "30s, 5m" in message


def test_pagerduty_without_a_routing_key_variable_is_rejected(tmp_path: Path) -> None:
    message = problems(tmp_path, GOOD.replace(", routing_key_env: PD_KEY", ""))
    assert "routing_key_env" in message


def test_durations_and_matchers_parse_like_alertmanager() -> None:
    assert [parse_duration(v) for v in (90, "90", "30s", "5m", "4h", "2d", "500ms")] == [
        90, 90, 30, 300, 14400, 172800, 0.5,
    ]  # fmt: skip
    assert Matcher.parse('job!~"bert-.*"').matches({"job": "resnet"})
    assert not Matcher.parse("job=~bert").matches({"job": "bert-large"})  # anchored
    assert Matcher.parse('cluster=""').matches({})  # a missing label is the empty string


def test_example_route_in_the_docs_loads(tmp_path: Path) -> None:
    import re

    from tests.helpers import REPO_ROOT

    doc = (REPO_ROOT / "docs" / "alerting-routing.md").read_text()
    example = re.findall(r"```yaml\n(.*?)```", doc, re.S)[0]
    cfg = load(tmp_path, example)
    assert [r.kind for r in cfg.receivers] == ["pagerduty", "slack", "webhook", "alertmanager"]
