"""Alert states pending -> firing -> resolved, fingerprints, acknowledgement."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from rmswatch.alerting.lifecycle import acknowledge_alert, fingerprint, identity_labels, utc
from rmswatch.alerting.scheduler import run_tick
from rmswatch.alerting.signals import Signal
from rmswatch.config import Config
from rmswatch.store.models_alerting import AlertRow
from tests.alerting.routing_support import Clock, alert_states, events, signal, store


def tick(engine, clock: Clock, *signals: Signal):  # type: ignore[no-untyped-def]
    return run_tick(engine, Config(), clock(), lambda _e, _c, _n: list(signals))


def test_alert_is_pending_until_its_for_duration_has_held_then_fires(sqlite_url: str) -> None:
    engine, clock = store(sqlite_url), Clock()
    tick(engine, clock, signal(for_seconds=120))
    assert alert_states(engine) == {"LossDiverging": "pending"}
    clock.advance(60)
    tick(engine, clock, signal(for_seconds=120))
    assert alert_states(engine) == {"LossDiverging": "pending"}
    clock.advance(60)
    result = tick(engine, clock, signal(for_seconds=120))
    assert [(t.from_state, t.to_state) for t in result.transitions] == [("pending", "firing")]
    with Session(engine) as session:
        alert = session.scalars(select(AlertRow)).one()
        assert alert.starts_at is not None and alert.active_since is not None
        assert utc(alert.starts_at) - utc(alert.active_since) == timedelta(seconds=120)


def test_a_blip_shorter_than_for_never_fires_and_leaves_no_page(sqlite_url: str) -> None:
    engine, clock = store(sqlite_url), Clock()
    tick(engine, clock, signal(for_seconds=300))
    clock.advance(30)
    tick(engine, clock, signal(for_seconds=300, active=False))
    assert alert_states(engine) == {"LossDiverging": "inactive"}
    assert events(engine) == [
        ("LossDiverging", "inactive", "pending"),
        ("LossDiverging", "pending", "inactive"),
    ]


def test_firing_alert_resolves_when_its_condition_clears(sqlite_url: str) -> None:
    engine, clock = store(sqlite_url), Clock()
    tick(engine, clock, signal())
    clock.advance(30)
    tick(engine, clock, signal(active=False))
    assert alert_states(engine) == {"LossDiverging": "resolved"}
    assert [e[2] for e in events(engine)] == ["pending", "firing", "resolved"]


def test_alert_no_longer_reported_by_evaluation_resolves(sqlite_url: str) -> None:
    engine, clock = store(sqlite_url), Clock()
    tick(engine, clock, signal("NonFiniteLoss"), signal("LossDiverging"))
    clock.advance(30)
    tick(engine, clock, signal("LossDiverging"))
    assert alert_states(engine) == {"NonFiniteLoss": "resolved", "LossDiverging": "firing"}


def test_failed_evaluation_changes_nothing(sqlite_url: str) -> None:
    engine, clock = store(sqlite_url), Clock()
    tick(engine, clock, signal())

    def broken(*_args: object) -> list[Signal]:
        raise RuntimeError("rule exploded")

    with pytest.raises(RuntimeError, match="rule exploded"):
        run_tick(engine, Config(), clock.advance(30), broken)
    assert alert_states(engine) == {"LossDiverging": "firing"}


def test_fingerprint_ignores_run_id_so_a_resumed_run_keeps_its_alert(sqlite_url: str) -> None:
    first, resumed = signal(run_id="run-1"), signal(run_id="run-1-resume-2")
    assert fingerprint(identity_labels(first)) == fingerprint(identity_labels(resumed))
    assert fingerprint(identity_labels(first)) != fingerprint(
        identity_labels(signal(job="bert-finetune"))
    )
    engine, clock = store(sqlite_url), Clock()
    tick(engine, clock, first)
    clock.advance(30)
    tick(engine, clock, resumed)
    assert [e[2] for e in events(engine)] == ["pending", "firing"]
    with Session(engine) as session:
        alert = session.scalars(select(AlertRow)).one()
        assert alert.run_id == "run-1-resume-2"
        assert "run_id" not in alert.labels
        assert "cluster" not in alert.labels  # empty labels are absent labels


def test_fingerprint_does_not_depend_on_label_order() -> None:
    assert fingerprint({"a": "1", "b": "2"}) == fingerprint({"b": "2", "a": "1"})
    assert fingerprint({"a": "1b"}) != fingerprint({"a1": "b"})


def test_two_runs_reporting_one_problem_are_one_alert_active_if_either_is(
    sqlite_url: str,
) -> None:
    engine, clock = store(sqlite_url), Clock()
    tick(engine, clock, signal(run_id="a", active=True), signal(run_id="b", active=False))
    assert alert_states(engine) == {"LossDiverging": "firing"}


def test_acknowledgement_is_recorded_and_cleared_by_the_next_episode(sqlite_url: str) -> None:
    engine, clock = store(sqlite_url), Clock()
    tick(engine, clock, signal())
    fp = fingerprint(identity_labels(signal()))
    assert acknowledge_alert(engine, fp, "alice", now=clock())
    assert not acknowledge_alert(engine, "0000000000000000", "alice")
    assert events(engine)[-1] == ("LossDiverging", "firing", "acknowledged")
    tick(engine, clock, signal(active=False))
    assert not acknowledge_alert(engine, fp, "alice")  # resolved: nothing to acknowledge
    tick(engine, clock, signal())
    with Session(engine) as session:
        assert session.scalars(select(AlertRow)).one().acknowledged_by is None
