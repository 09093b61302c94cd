"""One bad value never costs a run (issue 11): the store writer, the shipper and ingest screen each
record against the store's limits, isolate what the store still refuses, and store the rest; on
SQLite, on the real PostgreSQL and over real HTTP alike."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
import requests
from sqlalchemy import Engine, select, text

from rmswatch.collectors.http_shipper import HttpShipper, requests_transport
from rmswatch.collectors.store_writer import StoreWriter
from rmswatch.collectors.wire import encode_batch
from rmswatch.store.engine import make_engine, upgrade
from rmswatch.store.models import Checkpoint, LayerStep, Run, Step, Validation
from rmswatch.trainer_hooks.records import (
    CheckpointRecord,
    RunStatus,
    Telemetry,
    ValidationRecord,
)
from tests.collectors.ingest_server import TOKEN, serve_ingest
from tests.factories import T0, layer_stats, run_info, step_record

AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


def _rows(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """What a person would read back: enough of each table to tell two stores apart."""
    with engine.connect() as conn:
        return {
            "runs": [tuple(r) for r in conn.execute(select(Run.run_id, Run.status, Run.last_step))],
            "steps": [
                tuple(r) for r in conn.execute(select(Step.step, Step.loss).order_by(Step.step))
            ],
            "layers": [
                tuple(r)
                for r in conn.execute(
                    select(LayerStep.step, LayerStep.layer).order_by(
                        LayerStep.step, LayerStep.layer
                    )
                )
            ],
            "validations": [
                tuple(r)
                for r in conn.execute(
                    select(Validation.step, Validation.name, Validation.value).order_by(
                        Validation.step, Validation.name
                    )
                )
            ],
            "checkpoints": [
                tuple(r) for r in conn.execute(select(Checkpoint.step, Checkpoint.detail))
            ],
        }


def _bad_mix() -> list[Telemetry]:
    """300 good steps with bad values spread among them: each bad value costs only itself."""
    items: list[Telemetry] = [step_record(s) for s in range(300)]
    long_layer = dict(items[20].layers) | {"x" * 600: layer_stats(20)}
    items[20] = dataclasses.replace(items[20], layers=long_layer)  # one layer cut, step kept
    items[30] = dataclasses.replace(items[30], time=float("nan"))  # rejected whole
    items[40] = dataclasses.replace(items[40], nonfinite={"grad": 2**63})  # rejected whole
    items.insert(12, ValidationRecord(11, T0 + 11, 0.5, "v" * 179))  # rejected
    items.insert(13, ValidationRecord(11, T0 + 11, 0.25, "val\x00loss"))  # rejected
    items.insert(14, ValidationRecord(11, T0 + 11, 0.93, "accuracy"))  # kept
    items.append(CheckpointRecord(299, T0 + 299, "save", False, detail="disk\x00full"))  # cleaned
    return items


def _expected_rows() -> dict[str, list[tuple[Any, ...]]]:
    steps = [s for s in range(300) if s not in (30, 40)]
    return {
        "runs": [("run-1", "succeeded", 299)],
        "steps": [(s, 1.0 / (s + 1)) for s in steps],
        "layers": [(s, f"layer{i}.weight") for s in steps for i in range(2)],
        "validations": [(11, "accuracy", 0.93)],
        "checkpoints": [(299, "disk\ufffdfull")],
    }


def _through_store_writer(url: str, items: list[Telemetry]) -> Any:
    writer = StoreWriter(url, flush_interval=60.0)
    writer.open(run_info())
    writer.write(items)
    writer.close(RunStatus(T0 + 400, "succeeded"))
    return writer.stats()


def _through_http(url: str, items: list[Telemetry]) -> Any:
    engine = make_engine(url)
    upgrade(engine)
    try:
        with serve_ingest(engine) as base:
            shipper = HttpShipper(base, token=TOKEN, flush_interval=60.0)
            shipper.open(run_info())
            shipper.write(items)
            shipper.close(RunStatus(T0 + 400, "succeeded"))
    finally:
        engine.dispose()
    return shipper.stats()


@pytest.mark.parametrize("path", ["store_writer", "http"])
def test_the_same_bad_inputs_give_the_same_stored_result_on_every_store(
    store_url: str, path: str
) -> None:
    stats = (_through_store_writer if path == "store_writer" else _through_http)(
        store_url, _bad_mix()
    )
    engine = make_engine(store_url)
    try:
        assert _rows(engine) == _expected_rows()
    finally:
        engine.dispose()
    # 4 records refused, 1 layer cut: 5 problems, each counted where it was found
    if path == "store_writer":
        assert (stats.rejected, stats.quarantined, stats.dropped) == (5, 0, 0)
    else:
        assert (stats.rejected, stats.dropped) == (4, 4)


def _refuse_big_losses(engine: Engine) -> None:
    """A rule the store enforces that no rmswatch limit foresaw: loss above 1e6 is refused."""
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("ALTER TABLE steps ADD CONSTRAINT loss_sane CHECK (loss < 1e6)"))
        else:
            conn.execute(
                text(
                    "CREATE TRIGGER loss_sane BEFORE INSERT ON steps WHEN NEW.loss >= 1e6 "
                    "BEGIN SELECT RAISE(ABORT, 'loss_sane'); END"
                )
            )


def test_a_row_the_store_refuses_is_quarantined_alone_and_reported_at_close(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    _refuse_big_losses(engine)
    writer = StoreWriter(engine=engine, flush_interval=60.0)
    writer.open(run_info())
    writer.write([step_record(s, loss=1e9 if s == 77 else None) for s in range(200)])
    with caplog.at_level(logging.WARNING, logger="rmswatch.collectors.store_writer"):
        writer.close(RunStatus(T0 + 300, "succeeded"))
    stats = writer.stats()
    assert (stats.written, stats.quarantined, stats.dropped, stats.flush_errors) == (199, 1, 0, 0)
    assert [q.record.step for q in writer.quarantined] == [77]  # type: ignore[attr-defined]
    assert "IntegrityError" in writer.quarantined[0].reason
    steps = [r[0] for r in _rows(engine)["steps"]]
    assert steps == [s for s in range(200) if s != 77]
    assert any("1 quarantined" in r.getMessage() for r in caplog.records)


def test_the_server_quarantines_what_its_store_refuses_and_the_shipper_never_resends_it(
    sqlite_engine: Engine,
) -> None:
    _refuse_big_losses(sqlite_engine)
    posts: list[int] = []
    real = requests_transport()

    def counting(url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> Any:
        answer = real(url, body, headers, timeout)
        posts.append(answer[0] if isinstance(answer, tuple) else answer)
        return answer

    with serve_ingest(sqlite_engine) as base:
        shipper = HttpShipper(base, token=TOKEN, flush_interval=60.0, transport=counting)
        shipper.open(run_info())
        shipper.write([step_record(s, loss=1e9 if s == 5 else None) for s in range(10)])
        shipper.close(RunStatus(T0 + 100, "succeeded"))
    assert posts == [422]  # one POST: a 4xx is never retried
    stats = shipper.stats()
    assert (stats.sent, stats.rejected, stats.retries) == (9, 1, 0)
    assert [r[0] for r in _rows(sqlite_engine)["steps"]] == [s for s in range(10) if s != 5]


@pytest.fixture
def ingest_url(engine: Engine) -> Iterator[str]:
    with serve_ingest(engine, max_batch_bytes=4 * 1024 * 1024) as base:
        yield base + "/api/v1/ingest"


def _body(mutate: Callable[[dict[str, Any]], object]) -> bytes:
    body = json.loads(encode_batch(run_info(), [step_record(0), step_record(1)], open_run=True))
    body["items"].append(
        {"kind": "validation", "step": 1, "time": T0 + 1, "value": 0.5, "name": "val_loss"}
    )
    mutate(body)
    return json.dumps(body).encode()


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(body: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = body
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        target[int(last) if last.isdigit() else last] = value

    return mutate


ENVELOPE_CASES = {
    "started_at NaN": ("run.started_at", "NaN", "run.started_at"),
    "started_at Infinity": ("run.started_at", "Infinity", "run.started_at"),
    "started_at 1e300": ("run.started_at", 1e300, "run.started_at"),
    "started_at -1e15": ("run.started_at", -1e15, "run.started_at"),
    "pid 2**31": ("run.pid", 2**31, "run.pid"),
    "rank 2**40": ("run.rank", 2**40, "run.rank"),
    "world_size 2**63": ("run.world_size", 2**63, "run.world_size"),
    "NUL in job": ("run.job", "re\x00train", "run.job"),
    "NUL in run_id": ("run.run_id", "r\x00", "run.run_id"),
    "10 kB host": ("run.host", "h" * 10_000, "run.host"),
    "label int": ("run.labels", {"gpus": 8}, 'run.labels["gpus"]'),
    "status time NaN": ("status", {"time": "NaN", "status": "failed"}, "status.time"),
}

ITEM_CASES = {
    "time NaN": ("items.0.time", "NaN", "items[0].time"),
    "time Infinity": ("items.0.time", "Infinity", "items[0].time"),
    "time 1e300": ("items.0.time", 1e300, "items[0].time"),
    "time -1e15": ("items.0.time", -1e15, "items[0].time"),
    "step 2**63": ("items.0.step", 2**63, "items[0].step"),
    "count 2**64": ("items.0.nonfinite.grad", 2**64, 'items[0].nonfinite["grad"]'),
    "rank 2**40": ("items.0.rank", 2**40, "items[0].rank"),
    "NUL in validation name": ("items.2.name", "val\x00loss", "items[2].name"),
    "179-char validation name": ("items.2.name", "v" * 179, "items[2].name"),
}


@pytest.mark.parametrize("case", ENVELOPE_CASES, ids=list(ENVELOPE_CASES))
def test_a_bad_envelope_value_is_422_naming_it_and_nothing_is_written(
    ingest_url: str, engine: Engine, case: str
) -> None:
    path, value, field = ENVELOPE_CASES[case]
    response = requests.post(ingest_url, data=_body(_set(path, value)), headers=AUTH, timeout=30)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field
    assert _rows(engine)["runs"] == []


@pytest.mark.parametrize("case", ITEM_CASES, ids=list(ITEM_CASES))
def test_a_bad_record_value_is_422_naming_it_and_the_other_records_are_stored(
    ingest_url: str, engine: Engine, case: str
) -> None:
    path, value, field = ITEM_CASES[case]
    response = requests.post(ingest_url, data=_body(_set(path, value)), headers=AUTH, timeout=30)
    assert response.status_code == 422, response.text
    answer = response.json()
    assert [r["field"] for r in answer["rejected"]] == [field]
    rows = _rows(engine)
    index = int(path.split(".")[1])
    assert len(rows["steps"]) + len(rows["validations"]) == 2  # the other two of three records
    assert answer["accepted"]["steps"] == (2 if index == 2 else 1)


def test_a_nul_in_a_layer_name_cuts_that_layer_and_keeps_the_step(
    ingest_url: str, engine: Engine
) -> None:
    def mutate(body: dict[str, Any]) -> None:
        layers = body["items"][0]["layers"]
        layers["fc\x00weight"] = layers["layer0.weight"]

    response = requests.post(ingest_url, data=_body(mutate), headers=AUTH, timeout=30)
    assert response.status_code == 422
    (refused,) = response.json()["rejected"]
    assert refused["field"].startswith("items[0].layers[") and refused["stored"] is True
    assert len(_rows(engine)["layers"]) == 4


def test_json_nested_100k_deep_is_422_not_500(ingest_url: str) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    response = requests.post(ingest_url, data=deep, headers=AUTH, timeout=30)
    assert response.status_code == 422
    assert response.json()["field"] == "(body)"


def test_hyperparameters_nested_deeper_than_the_limit_are_422(ingest_url: str) -> None:
    nested: Any = 1
    for _ in range(200):
        nested = {"a": nested}
    response = requests.post(
        ingest_url, data=_body(_set("run.hyperparameters", [nested])), headers=AUTH, timeout=30
    )
    assert response.status_code == 422
    assert response.json()["field"] == "run.hyperparameters"
