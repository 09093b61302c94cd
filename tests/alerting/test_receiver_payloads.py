"""The receivers' payload builders as pure functions: Alertmanager's truncation order, Slack's
mrkdwn escaping and 3,000-character cut, PagerDuty's optional fields and 512 kB limit."""

from __future__ import annotations

import json
from typing import Any

from rmswatch.alerting.receivers import (
    PAGERDUTY_MAX_EVENT_BYTES,
    SLACK_SECTION_CHARS,
    pagerduty_events,
    slack_body,
    webhook_message,
)


def alert(status: str = "firing", **annotations: str) -> dict[str, Any]:
    return {
        "status": status,
        "labels": {"alertname": "TrainingNonFinite", "job": "retrain", "severity": "page"},
        "annotations": {"summary": "NaN in loss", **annotations},
        "startsAt": "2026-12-03T17:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "https://rmswatch.example.com/oncall?job=retrain",
        "fingerprint": "0123456789abcdef",
    }


def message(*alerts: dict[str, Any], max_alerts: int = 0) -> dict[str, Any]:
    return webhook_message(
        receiver="oncall",
        group_key='{}:{alertname="TrainingNonFinite"}',
        group_labels={"alertname": "TrainingNonFinite"},
        alerts=list(alerts),
        external_url="https://rmswatch.example.com",
        max_alerts=max_alerts,
    )


def test_max_alerts_truncates_before_status_and_common_labels_like_alertmanager() -> None:
    resolved = alert("resolved", run="a")
    firing = alert("firing", run="b")
    firing["labels"] = {**firing["labels"], "severity": "ticket"}
    body = message(resolved, firing, max_alerts=1)
    assert body["truncatedAlerts"] == 1
    assert body["status"] == "resolved"  # only the resolved alert is sent
    assert body["commonLabels"]["severity"] == "page"
    assert body["commonAnnotations"]["run"] == "a"


def test_slack_escapes_mrkdwn_control_characters_in_summaries_and_text() -> None:
    body = slack_body(message(alert(summary="loss <nan> & grad > 1e3")))
    section = body["blocks"][1]["text"]["text"]
    assert "loss &lt;nan&gt; &amp; grad &gt; 1e3" in section
    assert "<nan>" not in section
    assert "<https://rmswatch.example.com/oncall?job=retrain|on-call view>" in section


def test_a_long_summary_is_cut_so_the_runbook_link_stays_within_slacks_limit() -> None:
    runbook = "https://runbooks.example.com/rmswatch/nonfinite.md"
    body = slack_body(message(alert(summary="&" * 5000, runbook_url=runbook)))
    section = body["blocks"][1]["text"]["text"]
    assert len(section) <= SLACK_SECTION_CHARS
    assert section.endswith(f"<{runbook}|runbook>")
    assert "…" in section
    summary = section.split("` ", 1)[1].split("…")[0]
    assert summary == "&amp;" * (len(summary) // 5)  # never cut inside an entity


def test_pagerduty_leaves_out_an_empty_component_and_sends_a_known_one() -> None:
    without, with_run = pagerduty_events(message(alert(), alert(run_id="r1")))
    assert "component" not in without["payload"]
    assert with_run["payload"]["component"] == "r1"


def test_pagerduty_event_over_512_kb_drops_details_and_says_so() -> None:
    (event,) = pagerduty_events(message(alert(description="x" * (600 * 1024))))
    assert len(json.dumps(event, separators=(",", ":")).encode()) <= PAGERDUTY_MAX_EVENT_BYTES
    details = event["payload"]["custom_details"]
    assert "annotations" not in details
    assert details["labels"]["alertname"] == "TrainingNonFinite"
    assert "512" in details["truncated"] or str(PAGERDUTY_MAX_EVENT_BYTES) in details["truncated"]
    (small,) = pagerduty_events(message(alert(description="short")))
    assert small["payload"]["custom_details"]["annotations"]["description"] == "short"
