from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from sqlalchemy import Engine, func, select

from rmswatch.collectors.wire import encode_batch
from rmswatch.store import queries
from rmswatch.store.models import HistogramRow, LayerStep, Run, Step
from rmswatch.store.writes import SliSampleRecord
from rmswatch.trainer_hooks.records import RunStatus
from tests.collectors.ingest_server import TOKEN, serve_ingest
from tests.factories import T0, run_info, step_record

AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


@pytest.fixture
def server(sqlite_engine: Engine) -> Iterator[str]:
    with serve_ingest(sqlite_engine, max_batch_bytes=64 * 1024) as url:
        yield url + "/api/v1/ingest"


def _count(engine: Engine, model: type) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(model)).scalar_one())


def _batch(steps: range, **kw: Any) -> bytes:
    return encode_batch(run_info(), [step_record(s) for s in steps], **kw)


def test_a_batch_is_written_and_a_retried_batch_creates_no_duplicates(engine: Engine) -> None:
    body = _batch(range(5), open_run=True)
    with serve_ingest(engine) as url:
        first = requests.post(url + "/api/v1/ingest", data=body, headers=AUTH, timeout=10)
        again = requests.post(url + "/api/v1/ingest", data=body, headers=AUTH, timeout=10)
    assert first.status_code == again.status_code == 200
    assert first.json() == {
        "accepted": {
            "steps": 5,
            "layer_steps": 10,
            "histograms": 10,
            "validations": 0,
            "checkpoints": 0,
            "rank_checks": 0,
            "system_samples": 0,
            "sli_samples": 0,
        },
        "run_id": "run-1",
    }
    assert (_count(engine, Step), _count(engine, LayerStep), _count(engine, HistogramRow)) == (
        5,
        10,
        10,
    )


def test_the_final_batch_closes_the_run(server: str, sqlite_engine: Engine) -> None:
    requests.post(server, data=_batch(range(2), open_run=True), headers=AUTH, timeout=10)
    body = _batch(range(2, 4), status=RunStatus(T0 + 9, "succeeded"))
    assert requests.post(server, data=body, headers=AUTH, timeout=10).status_code == 200
    run = queries.run(sqlite_engine, "run-1")
    assert run is not None and (run["status"], run["last_step"]) == ("succeeded", 3)


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}],
    ids=["no-token", "wrong-token", "not-bearer"],
)
def test_a_request_without_the_right_bearer_token_is_refused_with_401(
    server: str, sqlite_engine: Engine, headers: dict[str, str]
) -> None:
    response = requests.post(server, data=_batch(range(1)), headers=headers, timeout=10)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert _count(sqlite_engine, Run) == 0


def test_a_server_without_a_configured_token_refuses_everything(sqlite_engine: Engine) -> None:
    with serve_ingest(sqlite_engine, token=None) as url:
        response = requests.post(
            url + "/api/v1/ingest", data=_batch(range(1)), headers=AUTH, timeout=10
        )
    assert response.status_code == 401
    assert "no token configured" in response.json()["detail"]


def test_an_oversized_batch_is_refused_with_413(server: str, sqlite_engine: Engine) -> None:
    body = _batch(range(200))
    assert len(body) > 64 * 1024
    response = requests.post(server, data=body, headers=AUTH, timeout=10)
    assert response.status_code == 413
    assert response.json()["max_batch_bytes"] == 64 * 1024
    assert _count(sqlite_engine, Step) == 0


def test_a_malformed_record_gets_422_naming_the_field_and_the_others_are_written(
    server: str, sqlite_engine: Engine
) -> None:
    body = json.loads(_batch(range(3)))
    body["items"][2]["grad_norm"] = "steep"
    response = requests.post(server, data=json.dumps(body), headers=AUTH, timeout=10)
    assert response.status_code == 422
    answer = response.json()
    assert answer["field"] == "items[2].grad_norm"
    assert "steep" in answer["detail"]
    assert [(r["index"], r["field"], r["stored"]) for r in answer["rejected"]] == [
        (2, "items[2].grad_norm", False)
    ]
    assert answer["accepted"]["steps"] == 2
    assert _count(sqlite_engine, Step) == 2 and _count(sqlite_engine, Run) == 1


def test_a_malformed_run_gets_422_and_nothing_is_written(
    server: str, sqlite_engine: Engine
) -> None:
    body = json.loads(_batch(range(3)))
    body["run"]["pid"] = 2**31
    response = requests.post(server, data=json.dumps(body), headers=AUTH, timeout=10)
    assert response.status_code == 422
    assert response.json()["field"] == "run.pid"
    assert "integer from 0 to 2147483647" in response.json()["detail"]
    assert _count(sqlite_engine, Step) == 0 and _count(sqlite_engine, Run) == 0


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda b: b["items"][0].update(kind="weights"), "items[0]"),
        (
            lambda b: b["items"][0]["layers"]["layer1.weight"].pop("param_norm"),
            'items[0].layers["layer1.weight"].param_norm',
        ),
        (
            lambda b: b["items"][0]["layers"]["layer0.weight"]["rms_hist"].update(counts=[-1]),
            'items[0].layers["layer0.weight"].rms_hist.counts[0]',
        ),
        (lambda b: b["run"].pop("run_id"), "run.run_id"),
        (lambda b: b.update(status={"time": 1, "status": "exploded"}), "status.status"),
        (lambda b: b.pop("run"), "items[0]"),
    ],
    ids=["unknown-kind", "missing-field", "negative-count", "no-run-id", "bad-status", "no-run"],
)
def test_each_kind_of_malformed_batch_names_its_field(server: str, mutate: Any, field: str) -> None:
    body = json.loads(_batch(range(1)))
    mutate(body)
    response = requests.post(server, data=json.dumps(body), headers=AUTH, timeout=10)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field


def test_a_body_that_is_not_json_gets_400(server: str) -> None:
    response = requests.post(server, data=b"{not json", headers=AUTH, timeout=10)
    assert response.status_code == 400


def test_non_finite_values_travel_as_strings_and_are_stored(
    server: str, sqlite_engine: Engine
) -> None:
    body = encode_batch(run_info(), [step_record(0, loss=float("inf"))])
    assert b'"Infinity"' in body
    assert requests.post(server, data=body, headers=AUTH, timeout=10).status_code == 200
    assert _count(sqlite_engine, Step) == 1


def test_production_sli_samples_are_accepted_without_a_run(
    server: str, sqlite_engine: Engine
) -> None:
    body = {
        "items": [
            {"kind": "sli", "job": "ranker", "name": "model_drift", "value": 0.42, "time": T0},
            {"kind": "sli", "job": "ranker", "name": "model_drift", "value": 0.5, "time": T0 + 60},
        ]
    }
    for _ in range(2):
        response = requests.post(server, data=json.dumps(body), headers=AUTH, timeout=10)
        assert response.status_code == 200
    frame = queries.sli_samples(sqlite_engine, job="ranker", name="model_drift")
    assert frame["value"].tolist() == [0.42, 0.5]
    assert encode_batch(None, [SliSampleRecord("ranker", "model_drift", 0.42, T0)]) == (
        b'{"version":1,"items":[{"kind":"sli","job":"ranker","name":"model_drift",'
        b'"value":0.42,"time":1750000000.0,"labels":{}}]}'
    )
