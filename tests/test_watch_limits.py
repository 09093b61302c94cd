"""`watch()` and the `record_*` calls against the store's limits (rmswatch._limits): a bad
argument raises at once naming the field and the limit; a bad value later is rejected, counted
and warned about, and nothing else of the run is lost (issue 11)."""

from __future__ import annotations

import socket
import warnings
from typing import Any

import pytest
import torch
from sqlalchemy import create_engine, select

import rmswatch
from rmswatch._limits import LimitError
from rmswatch.store.engine import make_engine
from rmswatch.store.models import Run, Step, Validation
from tests.helpers import free_port


def _optimizer() -> torch.optim.Optimizer:
    return torch.optim.RMSprop(torch.nn.Linear(4, 2).parameters(), lr=0.01)


@pytest.mark.parametrize(
    ("arguments", "field", "limit"),
    [
        ({"job": "j" * 300}, "job", "300 characters; expected text of 1-256"),
        ({"job": "bad\x00job"}, "job", "contains NUL"),
        ({"job": ""}, "job", "expected text of 1-256"),
        ({"run_id": "r" * 200}, "run_id", "200 characters; expected text of 1-128"),
        ({"run_id": "line\nbreak"}, "run_id", "control character"),
        ({"labels": {"gpus": 8}}, 'labels["gpus"]', "label values must be str"),
        ({"labels": "x"}, "labels", "expected a mapping of str to str"),
        ({"labels": {"k": "v\x00"}}, 'labels["k"]', "contains NUL"),
        ({"labels": {1: "v"}}, "labels key 1", "label keys must be str"),
        ({"prometheus_port": 70000}, "prometheus_port", "integer from 0 to 65535"),
    ],
)
def test_a_value_no_store_accepts_is_refused_at_watch_naming_field_and_limit(
    arguments: dict[str, Any], field: str, limit: str
) -> None:
    with pytest.raises(LimitError) as caught:
        rmswatch.watch(_optimizer(), **arguments)
    assert caught.value.field == field
    assert limit in str(caught.value)
    assert str(caught.value).startswith(field)


def test_a_layer_name_longer_than_the_store_takes_is_refused_at_watch() -> None:
    model = torch.nn.Module()
    model.add_module("m" * 600, torch.nn.Linear(2, 2))
    with pytest.raises(
        LimitError, match=r"layers\[0\]\.name: 607 characters; expected text of 1-512"
    ):
        rmswatch.watch(torch.optim.RMSprop(model.parameters()), model=model)


def test_a_busy_prometheus_port_names_host_and_port() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(
            OSError, match=f"prometheus_port={port}: cannot listen on 127.0.0.1:{port}"
        ):
            rmswatch.watch(_optimizer(), prometheus_port=port)


def test_a_prometheus_host_that_does_not_resolve_names_it() -> None:
    with pytest.raises(OSError, match=r"prometheus_host='no-such-host\.invalid' does not resolve"):
        rmswatch.watch(
            _optimizer(), prometheus_port=free_port(), prometheus_host="no-such-host.invalid"
        )


@pytest.mark.parametrize("store", ["sqlite:/data/x.db", "mysql://db/x", "nonsense"])
def test_a_store_url_that_is_not_one_says_what_a_valid_one_looks_like(store: str) -> None:
    with pytest.raises(ValueError, match=r"sqlite:///relative/file\.db or sqlite:////absolute"):
        rmswatch.watch(_optimizer(), store=store)


def _train(monitor: rmswatch.Monitor, optimizer: torch.optim.Optimizer, steps: range) -> None:
    model_input = torch.ones(3, 4)
    params = optimizer.param_groups[0]["params"]
    for _ in steps:
        optimizer.zero_grad()
        loss = (model_input @ params[0].T).pow(2).mean()
        loss.backward()
        optimizer.step()
        monitor.record_loss(loss)


def test_a_validation_name_too_long_is_rejected_counted_and_the_run_keeps_every_step(
    store_url: str,
) -> None:
    optimizer = _optimizer()
    monitor = rmswatch.watch(optimizer, job="j", store=store_url, system_metrics=False)
    _train(monitor, optimizer, range(10))
    with pytest.warns(
        RuntimeWarning, match=r"record_validation\(\) at step 10: name: 179 characters"
    ):
        monitor.record_validation(0.5, name="v" * 179)
    monitor.record_validation(0.4)
    _train(monitor, optimizer, range(10))
    monitor.close()
    assert monitor.rejected == 1
    engine = make_engine(store_url)
    with engine.connect() as conn:
        assert len(conn.execute(select(Step.step)).all()) == 20
        assert conn.execute(select(Validation.name, Validation.value)).all() == [("val_loss", 0.4)]
        assert conn.execute(select(Run.status)).scalar_one() == "succeeded"
    engine.dispose()


def test_a_validation_named_accuracy_is_stored_under_accuracy_only(sqlite_url: str) -> None:
    optimizer = _optimizer()
    monitor = rmswatch.watch(optimizer, job="j", store=sqlite_url, system_metrics=False)
    _train(monitor, optimizer, range(3))
    monitor.record_validation(0.93, name="accuracy")
    _train(monitor, optimizer, range(1))
    monitor.close()
    assert monitor.records[2].validation is None  # the step's `validation` means val_loss
    engine = create_engine(sqlite_url)
    with engine.connect() as conn:
        rows = conn.execute(select(Validation.step, Validation.name, Validation.value)).all()
    engine.dispose()
    assert rows == [(3, "accuracy", 0.93)]


def test_a_checkpoint_detail_with_nul_is_kept_with_the_nul_replaced(sqlite_url: str) -> None:
    optimizer = _optimizer()
    monitor = rmswatch.watch(optimizer, job="j", store=sqlite_url, system_metrics=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        monitor.record_checkpoint("save", ok=False, detail="disk\x00full")
    monitor.close()
    from rmswatch.store.models import Checkpoint

    engine = create_engine(sqlite_url)
    with engine.connect() as conn:
        assert conn.execute(select(Checkpoint.detail)).scalar_one() == "disk\ufffdfull"
    engine.dispose()


def test_the_limits_table_in_the_docs_is_the_one_in_the_code() -> None:
    from rmswatch._limits import LIMITS
    from tests.helpers import REPO_ROOT

    text = (REPO_ROOT / "docs" / "store.md").read_text(encoding="utf-8")
    section = text.split("## Limits", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    documented = [
        tuple(cell.strip().strip("`") for cell in row.strip("|").split(" | ")) for row in rows[1:]
    ]
    assert documented == [(limit.fields, limit.accepts, limit.store) for limit in LIMITS]
