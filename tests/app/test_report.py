"""The postmortem and `rmswatch report` on every kind of run a store holds: healthy, NaN, finite
divergence, stalled, and one with no telemetry at all (a store filled by real trainings)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
import requests
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from rmswatch.app.report import build_report_html, postmortem_data
from rmswatch.app.views import postmortem
from rmswatch.config import Config
from rmswatch.store.engine import make_engine
from rmswatch.store.models import Run
from tests.app.training import BAD_RUN, NAN_STEP, SCENARIO_RUNS, fill_by_training
from tests.helpers import free_port, subprocess_env

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_an_event_table_with_nothing_to_place_keeps_its_times() -> None:
    # every event has both a time and a step: the masks are empty (pandas 3 crashed here)
    frame = pd.DataFrame(
        {"time": [T0, T0 + timedelta(seconds=5)], "step": [1, 2], "kind": "x", "what": "y"}
    )
    steps = pd.DataFrame({"step": [1, 2], "time": [T0, T0 + timedelta(seconds=5)]})
    ordered = postmortem.order_events(frame, steps)
    assert ordered["step"].tolist() == [1, 2]
    assert ordered["time"].tolist() == [pd.Timestamp(T0), pd.Timestamp(T0 + timedelta(seconds=5))]


def test_step_only_and_time_only_events_borrow_from_the_nearest_recorded_step_before() -> None:
    frame = pd.DataFrame(
        {
            "time": [None, T0 + timedelta(seconds=25), T0 - timedelta(seconds=5), None],
            "step": [35, None, None, None],
            "kind": ["a", "b", "c", "d"],
            "what": "",
        }
    )
    times = [T0 + timedelta(seconds=s) for s in (0, 10, 20, 30)]
    steps = pd.DataFrame({"step": [10, 20, 30, 40], "time": times})
    ordered = postmortem.order_events(frame, steps).set_index("kind")
    assert ordered.loc["a", "time"] == pd.Timestamp(T0 + timedelta(seconds=20))  # step 30's
    assert ordered.loc["b", "step"] == 30  # the last step at or before its time
    assert pd.isna(ordered.loc["c", "step"])  # before the first step
    assert pd.isna(ordered.loc["d", "time"]) and list(ordered.index)[-1] == "d"  # unplaced: last


def test_a_run_without_telemetry_still_gets_a_timeline() -> None:
    frame = pd.DataFrame({"time": [T0], "step": [None], "kind": "run", "what": "started"})
    ordered = postmortem.order_events(frame, pd.DataFrame(columns=["step", "time"]))
    assert ordered["kind"].tolist() == ["run"] and pd.isna(ordered["step"].iloc[0])


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = f"sqlite:///{tmp_path_factory.mktemp('report') / 'rmswatch.db'}"
    trained = fill_by_training(url)
    yield url
    trained.close()


@pytest.fixture
def engine(store: str) -> Iterator[Engine]:
    engine = make_engine(store)
    yield engine
    engine.dispose()


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(SCENARIO_RUNS))
def test_the_postmortem_of_every_kind_of_run_builds_and_names_its_status(
    engine: Engine, kind: str
) -> None:
    run_id = SCENARIO_RUNS[kind]
    data = postmortem_data(engine, run_id)
    assert data is not None
    assert data.timeline["kind"].iloc[0] == "run"  # it starts with the run
    page = build_report_html(data)
    assert f"Postmortem: {data.run['job']} · {run_id}" in page
    assert f"Status <b>{data.run['status']}</b>" in page


@pytest.mark.slow
def test_the_postmortem_of_the_nan_run_names_its_first_nonfinite_step(engine: Engine) -> None:
    data = postmortem_data(engine, BAD_RUN)
    assert data is not None and data.first_nonfinite is not None
    assert data.first_nonfinite["step"] == NAN_STEP
    assert f"First non-finite step: {NAN_STEP}" in build_report_html(data)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["healthy", "empty"])
def test_rmswatch_report_writes_the_report_of_a_run_as_a_real_process(
    store: str, tmp_path: Path, kind: str
) -> None:
    output = tmp_path / "report.html"
    done = subprocess.run(
        [sys.executable, "-m", "rmswatch", "report", "--db", store,
         "--run", SCENARIO_RUNS[kind], "-o", str(output)],
        env=subprocess_env(), capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"wrote {output}"
    assert SCENARIO_RUNS[kind] in output.read_text(encoding="utf-8")


@pytest.mark.slow
def test_a_failing_callback_shows_an_error_panel_naming_what_failed(tmp_path: Path) -> None:
    from rmswatch.server import build_server
    from rmswatch.store.engine import upgrade

    engine = make_engine(f"sqlite:///{tmp_path / 'broken.db'}")
    upgrade(engine)
    with Session(engine) as session:
        session.add(Run(run_id="r", job="j", started_at=T0))
        session.commit()
    with engine.begin() as conn:  # a store missing a table the postmortem reads
        conn.execute(text("DROP TABLE checkpoints"))
    server = build_server(Config(), engine, start_scheduler=False, environ={})
    port = free_port()
    server.start_in_thread("127.0.0.1", port)
    try:
        answer = requests.post(
            f"http://127.0.0.1:{port}/_dash-update-component",
            json={
                "output": "..pm-body.children...pm-share.href..",
                "outputs": [
                    {"id": "pm-body", "property": "children"},
                    {"id": "pm-share", "property": "href"},
                ],
                "inputs": [{"id": "pm-run", "property": "value", "value": "r"}],
                "changedPropIds": ["pm-run.value"],
                "state": [],
            },
            timeout=60,
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()["response"]["pm-body"]["children"]
        assert body["props"]["className"] == "error-panel"
        shown = str(body)
        assert "could not draw pm-body.children" in shown and "OperationalError" in shown
        assert "pm-share" not in answer.json()["response"]  # left as it was
    finally:
        server.shutdown()
        engine.dispose()
