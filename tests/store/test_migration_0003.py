"""Revision 0003: the training-loop fields of StepRecord/LayerStats, through wire and store."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from typing import Any

from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, MetaData, Table, insert

from rmswatch.collectors.wire import decode_batch, encode_batch
from rmswatch.store import queries
from rmswatch.store.engine import (
    _alembic_config,
    head_revision,
    make_engine,
    upgrade,
    write_transaction,
)
from rmswatch.store.writes import _step_rows, upsert_run, write_telemetry
from rmswatch.trainer_hooks.records import StepRecord
from tests.factories import run_info, step_record


def write_as_of_old_revision(conn: Connection, run_pk: int, records: Sequence[StepRecord]) -> None:
    """Write step rows the way an older rmswatch did: only the columns the store has now."""
    steps: list[dict[str, Any]] = []
    layers: list[dict[str, Any]] = []
    hists: list[dict[str, Any]] = []
    for rec in records:
        _step_rows(run_pk, rec, steps, layers, hists)
    meta = MetaData()
    for name, rows in (("steps", steps), ("layer_steps", layers), ("histograms", hists)):
        table = Table(name, meta, autoload_with=conn)
        present = set(table.c.keys())
        conn.execute(insert(table), [{k: v for k, v in r.items() if k in present} for r in rows])


def loop_record(step: int) -> StepRecord:
    """A record that uses every field of this round with a non-default value."""
    base = step_record(step)
    layers = {
        name: dataclasses.replace(stats, grad_norm_before_clip=4.0 + step)
        for name, stats in base.layers.items()
    }
    return dataclasses.replace(
        base,
        layers=layers,
        lrs=(0.01, 0.002),
        grad_norm_before_clip=math.inf if step == 2 else 4.18,
        clipped=step != 1,
        skipped=step == 2,
        loss_scale=32768.0 / (step + 1),
        rank=3,
        world_size=4,
        full=step != 1,
    )


def test_there_is_one_head_and_0003_follows_0002() -> None:
    script = ScriptDirectory.from_config(_alembic_config())
    assert script.get_heads() == [head_revision()]
    revision = script.get_revision("0003")
    assert revision is not None and revision.down_revision == "0002"


def test_a_0002_store_upgrades_keeping_its_rows_with_the_defaults_of_an_old_record(
    store_url: str,
) -> None:
    engine = make_engine(store_url)
    assert upgrade(engine, "0002") == "0002"
    with write_transaction(engine) as conn:
        run_pk = upsert_run(conn, run_info("old-run"), reopen=True)
        write_as_of_old_revision(conn, run_pk, [step_record(s) for s in range(3)])
    assert upgrade(engine) == head_revision()
    frame = queries.steps(engine, run_pk)
    assert frame["step"].tolist() == [0, 1, 2]
    assert frame["clipped"].tolist() == [False] * 3
    assert frame["skipped"].tolist() == [False] * 3
    assert frame["full"].tolist() == [True] * 3
    assert frame["rank"].tolist() == [0] * 3
    assert frame["world_size"].tolist() == [1] * 3
    assert frame["grad_norm_before_clip"].isna().all()
    assert frame["loss_scale"].isna().all()
    layers = queries.layer_stats(engine, run_pk)
    assert len(layers) == 6 and layers["grad_norm_before_clip"].isna().all()
    # and the upgraded store takes records of this round
    with write_transaction(engine) as conn:
        write_telemetry(conn, run_pk, [loop_record(3)])
    # (loop_record is rank 3's: the store keeps each rank's rows apart)
    assert queries.steps(engine, run_pk, rank=3)["loss_scale"].tolist()[-1] == 32768.0 / 4
    engine.dispose()


def test_the_new_fields_are_written_and_read_back(engine: Engine) -> None:
    with write_transaction(engine) as conn:
        run_pk = upsert_run(conn, run_info("r"), reopen=True)
        write_telemetry(conn, run_pk, [loop_record(s) for s in range(3)])
    frame = queries.steps(engine, run_pk)
    assert frame["grad_norm_before_clip"].tolist()[:2] == [4.18, 4.18]
    assert math.isinf(frame["grad_norm_before_clip"].tolist()[2])
    assert frame["clipped"].tolist() == [True, False, True]
    assert frame["skipped"].tolist() == [False, False, True]
    assert frame["full"].tolist() == [True, False, True]
    assert frame["loss_scale"].tolist() == [32768.0, 16384.0, 32768.0 / 3]
    assert frame["rank"].tolist() == [3] * 3
    assert frame["world_size"].tolist() == [4] * 3
    assert [list(v) for v in frame["lrs"]] == [[0.01, 0.002]] * 3
    layers = queries.layer_stats(engine, run_pk)
    assert layers["grad_norm_before_clip"].tolist() == [4.0, 4.0, 5.0, 5.0, 6.0, 6.0]


def test_the_new_fields_travel_over_the_wire_unchanged() -> None:
    records = [loop_record(s) for s in range(3)]
    body = json.loads(encode_batch(run_info("r"), records))
    decoded = decode_batch(body).telemetry
    for sent, got in zip(records, decoded, strict=True):
        assert isinstance(got, StepRecord)
        for name in (
            "grad_norm_before_clip",
            "clipped",
            "skipped",
            "loss_scale",
            "rank",
            "world_size",
            "full",
            "lrs",
        ):
            assert getattr(got, name) == getattr(sent, name), name
        for layer, stats in sent.layers.items():
            assert got.layers[layer].grad_norm_before_clip == stats.grad_norm_before_clip
    # a batch from an older shipper (no new keys) still decodes, with the defaults
    old = json.loads(encode_batch(run_info("r"), [step_record(0)]))
    for key in ("grad_norm_before_clip", "clipped", "skipped", "loss_scale", "world_size", "full"):
        del old["items"][0][key]
    (rec,) = decode_batch(old).telemetry
    assert isinstance(rec, StepRecord)
    assert (rec.grad_norm_before_clip, rec.clipped, rec.skipped, rec.full) == (
        None,
        False,
        False,
        True,
    )
