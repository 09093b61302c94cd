"""The app's read path over alert state: active alerts, history per run, silences, outbox."""

from __future__ import annotations

from datetime import timedelta

from rmswatch.alerting.lifecycle import acknowledge_alert, fingerprint, identity_labels
from rmswatch.alerting.scheduler import run_tick
from rmswatch.alerting.silences import create_silence
from rmswatch.store.queries import (
    active_alerts,
    alert_history,
    alerts_for_run,
    notifications,
    silences,
)
from tests.alerting.routing_support import Clock, config, signal, store


def test_on_call_queries_show_state_history_silences_and_delivery(sqlite_url: str) -> None:
    engine, clock = store(sqlite_url), Clock()
    cfg = config([{"name": "oncall", "url": "http://127.0.0.1:9/h"}],
                 {"receiver": "oncall", "group_wait": 0})  # fmt: skip
    ticket = signal("ValidationRegressing", severity="ticket", run_id="run-2")
    run_tick(engine, cfg, clock(), lambda *_: [ticket])
    run_tick(engine, cfg, clock.advance(60), lambda *_: [ticket, signal()])
    acknowledge_alert(engine, fingerprint(identity_labels(signal())), "alice", now=clock())
    create_silence(engine, ["job=bert"], clock(), clock() + timedelta(hours=1), "bob", "noisy")

    active = active_alerts(engine)
    assert list(active["alertname"]) == ["LossDiverging", "ValidationRegressing"]  # pages first
    assert list(active["inhibited"]) == [False, True]
    assert active.loc[0, "acknowledged_by"] == "alice"
    assert active.loc[0, "summary"].startswith("LossDiverging on resnet-retrain")
    assert str(active["starts_at"].dt.tz) == "UTC"

    history = alert_history(engine, run_id="run-1")
    assert list(history["to_state"]) == ["pending", "firing", "acknowledged"]
    assert list(alert_history(engine, run_id="run-2")["to_state"]) == ["pending", "firing"]

    [row] = silences(engine, now=clock()).to_dict("records")
    assert (row["state"], row["matchers"], row["author"]) == ("active", 'job="bert"', "bob")

    sent = notifications(engine)  # the page joined a notified group: it waits group_interval
    assert list(sent["status"]) == ["firing"] and sent.loc[0, "attempts"] == 0
    assert "requests" not in sent.columns and sent["delivered_at"].isna().all()


def test_a_runs_alerts_include_resolved_ones_and_a_silence_takes_a_label_mapping(
    sqlite_url: str,
) -> None:
    engine, clock = store(sqlite_url), Clock()
    cfg = config([{"name": "oncall", "url": "http://127.0.0.1:9/h"}], {"receiver": "oncall"})
    run_tick(engine, cfg, clock(), lambda *_: [signal("NonFiniteLoss"), signal(run_id="other")])
    run_tick(engine, cfg, clock.advance(60), lambda *_: [signal(run_id="other")])
    raised = alerts_for_run(engine, "run-1")
    assert list(zip(raised["alertname"], raised["state"], strict=True)) == [
        ("NonFiniteLoss", "resolved")
    ]
    assert len(alerts_for_run(engine, "other")) == 1
    sid = create_silence(engine, {"alertname": "LossDiverging", "job": "resnet-retrain"},
                         clock(), clock() + timedelta(hours=1), "alice", "from the UI")  # fmt: skip
    assert silences(engine, now=clock()).loc[0, "id"] == sid


def test_recently_resolved_alerts_stay_listed_for_on_call_with_their_run_and_runbook(
    sqlite_url: str,
) -> None:
    from rmswatch.app.alerts import resolved_alerts as app_resolved_alerts
    from rmswatch.store.queries import resolved_alerts

    engine, clock = store(sqlite_url), Clock()
    cfg = config([{"name": "oncall", "url": "http://127.0.0.1:9/h"}], {"receiver": "oncall"})
    started = clock()
    run_tick(engine, cfg, started, lambda *_: [signal("NonFiniteLoss"), signal("Stalled")])
    run_tick(engine, cfg, clock.advance(60), lambda *_: [signal("Stalled")])  # NaN one resolves
    resolved = resolved_alerts(engine, since=started)
    assert list(zip(resolved["alertname"], resolved["state"], strict=True)) == [
        ("NonFiniteLoss", "resolved")
    ]
    assert resolved_alerts(engine, since=clock() + timedelta(seconds=1)).empty  # too long ago
    shown = app_resolved_alerts(engine, since=started)
    assert shown.loc[0, "run_id"] == "run-1" and str(shown["ends_at"].dt.tz) == "UTC"


def test_history_keeps_every_firing_with_its_own_run_start_end_and_peak(sqlite_url: str) -> None:
    from rmswatch.store.queries import resolved_alerts

    engine, clock = store(sqlite_url), Clock()
    cfg = config([{"name": "oncall", "url": "http://127.0.0.1:9/h"}], {"receiver": "oncall"})
    started = clock()
    # run-1 fires (peak 40) and resolves; run-2 of the same job fires the same alert later,
    # and while it fires the job's next attempt, run-3, takes it over
    run_tick(engine, cfg, clock(), lambda *_: [signal(run_id="run-1", value=10.0)])
    run_tick(engine, cfg, clock.advance(30), lambda *_: [signal(run_id="run-1", value=40.0)])
    run_tick(engine, cfg, clock.advance(30), lambda *_: [signal(run_id="run-1", active=False)])
    # an inactive signal from a run that started later must not move the ended firing to it
    run_tick(engine, cfg, clock.advance(30), lambda *_: [signal(run_id="run-2", active=False)])
    run_tick(engine, cfg, clock.advance(30), lambda *_: [signal(run_id="run-2", value=5.0)])
    run_tick(engine, cfg, clock.advance(30), lambda *_: [signal(run_id="run-3", value=8.0)])
    run_tick(engine, cfg, clock.advance(30), lambda *_: [signal(run_id="run-3", active=False)])

    resolved = resolved_alerts(engine, since=started).sort_values("starts_at")
    assert list(resolved["run_id"]) == ["run-1", "run-2", "run-3"]
    assert list(resolved["peak_value"]) == [40.0, 5.0, 8.0]
    assert list((resolved["ends_at"] - resolved["starts_at"]).dt.total_seconds()) == [60, 30, 30]
    assert alerts_for_run(engine, "run-1")["peak_value"].tolist() == [40.0]
    assert alerts_for_run(engine, "run-2")["ends_at"].notna().all()
    # the postmortem timeline shows each state change under its own run
    assert list(alert_history(engine, run_id="run-1")["to_state"]) == [
        "pending",
        "firing",
        "resolved",
    ]


def test_a_run_that_succeeded_while_a_page_fired_about_it_is_succeeded_with_incident(
    sqlite_url: str,
) -> None:
    from rmswatch.store import queries
    from tests.alerting.slo_store import T0, add_run

    engine, clock = store(sqlite_url), Clock()
    cfg = config([{"name": "oncall", "url": "http://127.0.0.1:9/h"}], {"receiver": "oncall"})
    for run_id in ("run-1", "run-2", "run-3"):
        add_run(engine, run_id, job="resnet-retrain", status="succeeded", ended=T0 + 50)
    run_tick(engine, cfg, clock(), lambda *_: [signal(run_id="run-1")])  # a page
    run_tick(engine, cfg, clock.advance(30), lambda *_: [signal(run_id="run-2", severity="ticket")])
    verdicts = dict(zip(*[queries.runs(engine)[c] for c in ("run_id", "verdict")], strict=True))
    assert verdicts == {"run-1": "succeeded with incident", "run-2": "succeeded",
                        "run-3": "succeeded"}  # fmt: skip
    assert queries.run(engine, "run-1")["verdict"] == "succeeded with incident"
    counts = queries.run_outcome_counts(engine, T0, 60, ["succeeded"], ["failed"],
                                        incident_is_bad=True)  # fmt: skip
    assert (counts["good"].sum(), counts["total"].sum()) == (2, 3)
    by_status = queries.run_outcome_counts(engine, T0, 60, ["succeeded"], ["failed"])
    assert by_status["good"].sum() == 3  # configurable: incident_is_bad: false
