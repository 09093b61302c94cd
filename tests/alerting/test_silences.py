"""Silences: matchers, time windows, validation, and `rmswatch silence add|list|expire`."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta

import pytest

from rmswatch.alerting.silences import create_silence, expire_silence, list_silences
from rmswatch.cli import main
from tests.alerting.routing_support import T0, store
from tests.helpers import subprocess_env

LABELS = {"alertname": "LossDiverging", "job": "resnet-retrain", "severity": "page"}


def test_silence_mutes_only_matching_alerts_inside_its_window(sqlite_url: str) -> None:
    engine = store(sqlite_url)
    create_silence(engine, ['job=~"resnet-.*"', "severity!=ticket"], T0 + timedelta(minutes=5),
                   T0 + timedelta(hours=1), "alice", "INC-42", now=T0)  # fmt: skip
    [silence] = list_silences(engine, now=T0)
    assert silence.state(T0) == "pending" and not silence.mutes(LABELS, T0)
    inside = T0 + timedelta(minutes=30)
    assert silence.mutes(LABELS, inside)
    assert not silence.mutes({**LABELS, "severity": "ticket"}, inside)
    assert not silence.mutes({**LABELS, "job": "bert"}, inside)
    assert not silence.mutes(LABELS, T0 + timedelta(hours=2))
    assert list_silences(engine, now=T0 + timedelta(hours=2)) == []
    assert len(list_silences(engine, now=T0 + timedelta(hours=2), include_expired=True)) == 1


def test_expiring_ends_a_silence_now(sqlite_url: str) -> None:
    engine = store(sqlite_url)
    sid = create_silence(engine, ["job=x"], T0, T0 + timedelta(hours=1), "a", "c", now=T0)
    assert expire_silence(engine, sid, by="bob", now=T0 + timedelta(minutes=1))
    assert not expire_silence(engine, sid, now=T0 + timedelta(minutes=2))
    assert list_silences(engine, now=T0 + timedelta(minutes=1)) == []


@pytest.mark.parametrize(
    ("matchers", "author", "comment", "error"),
    [
        ([], "a", "c", "at least one matcher"),
        (['job=~".*"'], "a", "c", "must not match an empty label"),
        (["job~x"], "a", "c", "not a matcher"),
        (["job=x"], " ", "c", "author"),
        (["job=x"], "a", "", "comment"),
    ],
)
def test_bad_silence_is_refused_naming_the_argument(
    sqlite_url: str, matchers: list[str], author: str, comment: str, error: str
) -> None:
    with pytest.raises(ValueError, match=error):
        create_silence(store(sqlite_url), matchers, T0, T0 + timedelta(hours=1), author, comment)


def rmswatch(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rmswatch", *args], capture_output=True,
                          text=True, env=subprocess_env(), timeout=120)  # fmt: skip


@pytest.mark.slow
def test_silence_cli_adds_lists_and_expires(
    sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # once through a real `python -m rmswatch` process, the rest in-process (same parser)
    added = rmswatch("silence", "--db", sqlite_url, "add", "job=resnet-retrain",
                     'alertname=~"Loss.*"', "--duration", "2h", "--author", "alice",
                     "--comment", "retraining on purpose")  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert added.stdout.startswith("silence 1 active until")
    assert main(["silence", "--db", sqlite_url, "list"]) == 0
    listed = capsys.readouterr().out
    assert 'job="resnet-retrain", alertname=~"Loss.*"' in listed
    assert "alice: retraining on purpose" in listed
    bad = ["silence", "--db", sqlite_url, "add", 'job=~".*"', "--author", "a", "--comment", "c"]
    assert main(bad) == 2
    assert "must not match an empty label" in capsys.readouterr().err
    assert main(["silence", "--db", sqlite_url, "expire", "1"]) == 0
    assert main(["silence", "--db", sqlite_url, "expire", "1"]) == 1
    assert main(["silence", "--db", sqlite_url, "list"]) == 0
    assert "no active or pending silences" in capsys.readouterr().out
