"""Property-based fuzzing of the two boundaries (issue 11): the ingest API over real HTTP and the
arguments of `watch()`. For any input: no 5xx (no crash), every refusal names its field, and
nothing valid is lost. Bounded: a fixed number of examples, no deadline (the machine is shared).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select

import rmswatch
from rmswatch._limits import LimitError
from rmswatch.collectors.wire import encode_batch
from rmswatch.store.engine import make_engine, upgrade
from rmswatch.store.models import Run, Step, Validation
from rmswatch.trainer_hooks.records import ValidationRecord
from tests.collectors.ingest_server import TOKEN, serve_ingest
from tests.factories import T0, run_info, step_record

AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
_runs = itertools.count()

# values that broke a store or a parser once, and their neighbours
NASTY = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([2**31 - 1, 2**31, 2**63 - 1, 2**63, -1, 0]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["NaN", "Infinity", "-Infinity", 1e300, -1e15, 253_402_300_800.0]),
    st.text(max_size=40),
    st.text(
        alphabet=st.characters(codec="utf-8") | st.sampled_from("\x00\n\x7f\ud800"), max_size=20
    ),
    st.sampled_from(["x" * 129, "y" * 257, "z" * 513, "h" * 10_000]),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=3),
)
RUN_FIELDS = ["job", "run_id", "started_at", "labels", "rank", "world_size", "host", "pid",
              "optimizer", "every", "resumed_from_step", "hyperparameters"]  # fmt: skip
STEP_FIELDS = ["step", "time", "loss", "grad_norm", "lr", "rank", "dropped_total", "nonfinite",
               "layers", "world_size", "loss_scale"]  # fmt: skip
VALIDATION_FIELDS = ["step", "time", "value", "name"]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('fuzz')}/fuzz.db")
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def ingest_url(store: Engine) -> Iterator[str]:
    with serve_ingest(store, max_batch_bytes=1024 * 1024) as base:
        yield base + "/api/v1/ingest"


mutation = st.tuples(
    st.sampled_from(["run", "item0", "item1", "item2"]),
    st.integers(min_value=0, max_value=100),
    NASTY,
)


def _batch(run_id: str) -> dict[str, Any]:
    items = [step_record(0), step_record(1), ValidationRecord(1, T0 + 1, 0.5, "val_loss")]
    body: dict[str, Any] = json.loads(encode_batch(run_info(run_id), items, open_run=True))
    return body


def _mutate(body: dict[str, Any], where: str, pick: int, value: Any) -> None:
    if where == "run":
        body["run"][RUN_FIELDS[pick % len(RUN_FIELDS)]] = value
        return
    item = body["items"][int(where[-1])]
    fields = VALIDATION_FIELDS if item["kind"] == "validation" else STEP_FIELDS
    item[fields[pick % len(fields)]] = value


def _stored(engine: Engine, run_id: str) -> tuple[set[int], set[tuple[int, str]]]:
    with engine.connect() as conn:
        pk = conn.execute(select(Run.id).where(Run.run_id == run_id)).scalar()
        if pk is None:
            return set(), set()
        steps = set(conn.execute(select(Step.step).where(Step.run_pk == pk)).scalars())
        validations = {
            (int(s), str(n))
            for s, n in conn.execute(
                select(Validation.step, Validation.name).where(Validation.run_pk == pk)
            )
        }
    return steps, validations


@pytest.mark.slow
@FUZZ
@given(mutations=st.lists(mutation, min_size=1, max_size=3))
def test_ingest_never_answers_5xx_names_every_refusal_and_keeps_every_valid_record(
    ingest_url: str, store: Engine, mutations: list[tuple[str, int, Any]]
) -> None:
    body = _batch(f"fuzz-{next(_runs)}")
    for where, pick, value in mutations:
        _mutate(body, where, pick, value)
    # json.dumps writes NaN/Infinity floats as bare tokens, which Python's parser reads back
    data = json.dumps(body).encode("utf-8", "surrogatepass")
    response = requests.post(ingest_url, data=data, headers=AUTH, timeout=60)
    assert response.status_code < 500, response.text
    answer = response.json()
    if response.status_code >= 400:
        assert response.status_code in (400, 422), response.text
        assert answer.get("field"), answer
    if "accepted" not in answer:
        return  # the envelope was refused: nothing of it was valid
    run_id = body["run"]["run_id"]
    refused = {r["index"] for r in answer.get("rejected", []) if not r["stored"]}
    for r in answer.get("rejected", []):
        assert r["field"].startswith(("items[", "(store)")), r
    steps, validations = _stored(store, run_id)
    for index, item in enumerate(body["items"]):
        if index in refused:
            continue
        if item["kind"] == "step":
            assert item["step"] in steps, (index, item["step"], answer)
        else:
            assert (item["step"], item["name"]) in validations, (index, answer)


LABELS = st.one_of(
    st.none(),
    NASTY,
    st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=4),
    st.dictionaries(st.text(max_size=3), NASTY, max_size=2),
)


@pytest.fixture(scope="module")
def watch_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('fuzz-watch')}/watch.db"
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    return url


@pytest.mark.slow
@settings(FUZZ, max_examples=40)
@given(job=st.one_of(st.text(max_size=300), NASTY), run_id=st.one_of(st.none(), NASTY),
       labels=LABELS)  # fmt: skip
def test_watch_either_refuses_naming_the_argument_or_stores_the_run(
    watch_store: str, job: Any, run_id: Any, labels: Any
) -> None:
    if isinstance(run_id, str):
        run_id = f"{run_id}-{next(_runs)}"  # runs stay distinct across examples
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.RMSprop(model.parameters())
    try:
        monitor = rmswatch.watch(
            optimizer, job=job, run_id=run_id, labels=labels, store=watch_store,
            system_metrics=False,
        )  # fmt: skip
    except LimitError as exc:
        assert exc.field.split("[")[0].split(" ")[0] in ("job", "run_id", "labels"), exc
        assert str(exc).startswith(exc.field)
        return
    model(torch.ones(1, 2)).sum().backward()
    optimizer.step()
    monitor.close()
    engine = make_engine(watch_store)
    try:
        with engine.connect() as conn:
            row = conn.execute(
                select(Run.job, Run.labels, Run.last_step).where(Run.run_id == monitor.run_id)
            ).one()
    finally:
        engine.dispose()
    assert row.job == job and row.last_step == 1  # nothing valid lost
    assert row.labels == dict(labels or {})
