"""Receivers: render a group notification for each kind and POST it, optionally HMAC-signed.

Bodies are rendered when the notification is written to the outbox (so a retry sends exactly
what was decided); secrets (PagerDuty routing key, signing secret) are read from the environment
at send time and never stored, logged or put in an exception message.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from rmswatch._validation import DeliveryError as DeliveryError
from rmswatch.alerting.routing_config import ReceiverConfig, display_url

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Rmswatch-Signature"
TIMESTAMP_HEADER = "X-Rmswatch-Timestamp"
IDEMPOTENCY_HEADER = "Idempotency-Key"
# Alertmanager writes this for "not resolved yet"
ZERO_TIME = "0001-01-01T00:00:00Z"

# (url, body, headers, timeout_seconds) -> HTTP status; raises OSError-like errors when down
Transport = Callable[[str, bytes, Mapping[str, str], float], int]


def requests_transport(url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> int:
    import requests

    try:
        response = requests.post(url, data=body, headers=dict(headers), timeout=timeout)
    except requests.RequestException as exc:
        # the exception text can quote the URL only; headers (signatures, keys) are not in it
        raise DeliveryError(f"{type(exc).__name__} posting to {display_url(url)}") from None
    return int(response.status_code)


def common_items(dicts: Sequence[Mapping[str, str]]) -> dict[str, str]:
    if not dicts:
        return {}
    first = dicts[0]
    return {k: v for k, v in sorted(first.items()) if all(d.get(k) == v for d in dicts[1:])}


def webhook_message(
    *,
    receiver: str,
    group_key: str,
    group_labels: Mapping[str, str],
    alerts: Sequence[Mapping[str, Any]],
    external_url: str,
    max_alerts: int = 0,
) -> dict[str, Any]:
    """Alertmanager's webhook body, version 4, for already-rendered alerts.

    As Alertmanager does, `max_alerts` truncates first: `status`, `commonLabels` and
    `commonAnnotations` describe the alerts sent, not the ones cut.
    """
    shown = list(alerts[:max_alerts]) if max_alerts else list(alerts)
    status = "firing" if any(a["status"] == "firing" for a in shown) else "resolved"
    return {
        "version": "4",
        "groupKey": group_key,
        "truncatedAlerts": len(alerts) - len(shown),
        "status": status,
        "receiver": receiver,
        "groupLabels": dict(group_labels),
        "commonLabels": common_items([a["labels"] for a in shown]),
        "commonAnnotations": common_items([a["annotations"] for a in shown]),
        "externalURL": external_url,
        "alerts": shown,
    }


SLACK_SECTION_CHARS = 3000  # Slack cuts a section's text here


def slack_escape(text: str) -> str:
    """Slack mrkdwn control characters as entities (Slack's "Escaping text" rule)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _slack_fit(summary: str, room: int) -> str:
    """`summary` escaped, cut (with an ellipsis, never inside an entity) to `room` characters."""
    escaped = slack_escape(summary)
    if len(escaped) <= room:
        return escaped
    cut = escaped[: max(room - 1, 0)]
    amp = cut.rfind("&")
    if amp != -1 and ";" not in cut[amp:]:
        cut = cut[:amp]
    return cut + "…"


def slack_body(message: Mapping[str, Any]) -> dict[str, Any]:
    """Incoming-webhook body: `text` for notifications and clients without blocks, plus blocks."""
    alerts = message["alerts"]
    firing = [a for a in alerts if a["status"] == "firing"]
    status = message["status"].upper()
    title = message["commonLabels"].get("alertname") or f"{len(alerts)} alerts"
    job = message["commonLabels"].get("job", "")
    headline = f"[{status}{':' + str(len(firing)) if firing else ''}] {title}" + (
        f" ({job})" if job else ""
    )
    # `text` is mrkdwn (escaped); the header block is plain_text (shown as written)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": headline[:150]}}
    ]
    # Slack allows 50 blocks per message; the rest are counted, not dropped silently
    for alert in alerts[:20]:
        summary = alert["annotations"].get("summary") or alert["labels"].get("alertname", "")
        links = [f"<{alert['generatorURL']}|on-call view>"] if alert["generatorURL"] else []
        if alert["annotations"].get("runbook_url"):
            links.append(f"<{alert['annotations']['runbook_url']}|runbook>")
        severity = slack_escape(alert["labels"].get("severity", ""))
        head = f"*{alert['status']}* `{severity}` "
        tail = "\n" + " · ".join(links)
        # the links come last, so a long summary is cut rather than them
        fitted = _slack_fit(summary, SLACK_SECTION_CHARS - len(head) - len(tail))
        text = (head + fitted + tail)[:SLACK_SECTION_CHARS]
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": text}})
    hidden = len(alerts) - min(len(alerts), 20) + int(message.get("truncatedAlerts", 0))
    if hidden:
        blocks.append(
            {"type": "context", "elements": [{"type": "mrkdwn", "text": f"+{hidden} more"}]}
        )
    return {"text": slack_escape(headline), "blocks": blocks}


_PD_SEVERITY = {"page": "critical", "ticket": "warning"}
PAGERDUTY_MAX_EVENT_BYTES = 512 * 1024  # Events API v2 refuses a larger event


def _event_bytes(event: Mapping[str, Any]) -> int:
    return len(json.dumps(event, separators=(",", ":")).encode())


def _fit_pagerduty(event: dict[str, Any]) -> dict[str, Any]:
    """Shrink `custom_details` (annotations first, then labels) until the event fits 512 kB."""
    if _event_bytes(event) <= PAGERDUTY_MAX_EVENT_BYTES:
        return event
    payload = event["payload"]
    details = payload["custom_details"]
    for kept in ({"labels": details["labels"]}, {}):
        payload["custom_details"] = {
            **kept,
            "truncated": f"custom_details cut: the event was over {PAGERDUTY_MAX_EVENT_BYTES} "
            "bytes (the Events API v2 limit); see the on-call view",
        }
        if _event_bytes(event) <= PAGERDUTY_MAX_EVENT_BYTES:
            return event
    return event


def pagerduty_events(message: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One Events API v2 event per alert; dedup_key is the fingerprint, so retries and repeats
    update one incident. `routing_key` is added at send time."""
    events: list[dict[str, Any]] = []
    for alert in message["alerts"]:
        if alert["status"] == "resolved":
            events.append({"event_action": "resolve", "dedup_key": alert["fingerprint"]})
            continue
        labels, annotations = alert["labels"], alert["annotations"]
        summary = annotations.get("summary") or f"{labels.get('alertname')} on {labels.get('job')}"
        links = [{"href": alert["generatorURL"], "text": "rmswatch on-call view"}]
        if annotations.get("runbook_url"):
            links.append({"href": annotations["runbook_url"], "text": "runbook"})
        payload: dict[str, Any] = {
            "summary": summary[:1024],
            "source": labels.get("job") or "rmswatch",
            "severity": _PD_SEVERITY.get(labels.get("severity", ""), "error"),
            "timestamp": alert["startsAt"],
        }
        # optional fields are left out rather than sent empty
        optional = {
            "component": annotations.get("run_id", ""),
            "group": labels.get("job", ""),
            "class": labels.get("alertname", ""),
        }
        payload |= {k: v for k, v in optional.items() if v}
        payload["custom_details"] = {"labels": labels, "annotations": annotations}
        event = {
            "event_action": "trigger",
            "dedup_key": alert["fingerprint"],
            "payload": payload,
            "links": links,
            "client": "rmswatch",
            "client_url": message["externalURL"],
        }
        events.append(_fit_pagerduty(event))
    return events


def alertmanager_alerts(message: Mapping[str, Any]) -> list[dict[str, Any]]:
    """POST /api/v2/alerts body. Firing alerts carry no endsAt, so Alertmanager applies its
    resolve_timeout from when it *receives* them (robust to outbox delays); resolved ones do."""
    body = []
    for alert in message["alerts"]:
        item = {
            "labels": alert["labels"],
            "annotations": alert["annotations"],
            "startsAt": alert["startsAt"],
            "generatorURL": alert["generatorURL"],
        }
        if alert["status"] == "resolved":
            item["endsAt"] = alert["endsAt"]
        body.append(item)
    return body


def render_requests(receiver: ReceiverConfig, message: Mapping[str, Any]) -> list[Any]:
    """The HTTP bodies to POST, in order, for one group notification."""
    if receiver.kind == "webhook":
        return [dict(message)]
    if receiver.kind == "slack":
        return [slack_body(message)]
    if receiver.kind == "pagerduty":
        return list(pagerduty_events(message))
    return [alertmanager_alerts(message)]


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """`sha256=<hex>` over `timestamp.body`; the timestamp makes a captured request unreplayable
    after the receiver's tolerance window."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_signature(secret: str, timestamp: str, body: bytes, header: str) -> bool:
    """For receivers written in Python: constant-time check of `X-Rmswatch-Signature`."""
    return hmac.compare_digest(sign(secret, timestamp, body), header)


def _secret(receiver: ReceiverConfig, variable: str, environ: Mapping[str, str]) -> str:
    value = environ.get(variable, "")
    if not value:
        raise DeliveryError(
            f"receiver {receiver.name!r}: environment variable {variable} is not set"
        )
    return value


def send(
    receiver: ReceiverConfig,
    body: Any,
    *,
    transport: Transport,
    environ: Mapping[str, str],
    timestamp: str,
    idempotency_key: str | None = None,
) -> None:
    """POST one body; raises DeliveryError unless the receiver answers 2xx.

    `idempotency_key` goes in the `Idempotency-Key` header, the same on every retry of one
    request (PagerDuty also dedupes on the body's `dedup_key`, Alertmanager on the labels)."""
    if receiver.kind == "pagerduty":
        assert receiver.routing_key_env is not None
        body = {"routing_key": _secret(receiver, receiver.routing_key_env, environ), **body}
    data = json.dumps(body, separators=(",", ":"), sort_keys=False).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "rmswatch", **receiver.headers}
    if idempotency_key is not None:
        headers[IDEMPOTENCY_HEADER] = idempotency_key
    if receiver.secret_env:
        headers[TIMESTAMP_HEADER] = timestamp
        headers[SIGNATURE_HEADER] = sign(
            _secret(receiver, receiver.secret_env, environ), timestamp, data
        )
    if receiver.url_env and not environ.get(receiver.url_env):
        raise DeliveryError(
            f"receiver {receiver.name!r}: environment variable {receiver.url_env} is not set"
        )
    url = receiver.target_url(environ)
    shown = display_url(url)
    try:
        status = transport(url, data, headers, receiver.timeout_seconds)
    except DeliveryError:
        raise
    except Exception as exc:  # noqa: BLE001 - any transport failure is a retry, never a crash
        raise DeliveryError(f"{type(exc).__name__} posting to {shown}") from None
    log.debug("receiver %s (%s): POST %s -> %s", receiver.name, receiver.kind, shown, status)
    if not 200 <= status < 300:
        raise DeliveryError(f"receiver {receiver.name!r}: HTTP {status} from {shown}")
