"""The resume-mismatch and optimizer-desync pages, from what the checkpoint API and the
cross-rank check write into a real store."""

from __future__ import annotations

from sqlalchemy import Engine

from rmswatch.alerting.evaluate import evaluate
from rmswatch.config import Config
from rmswatch.generators.rules import health_alerts
from rmswatch.store.engine import write_transaction
from rmswatch.store.writes import write_telemetry
from rmswatch.trainer_hooks.records import CheckpointRecord, RankCheckRecord, Telemetry
from tests.alerting.slo_store import T0, add_run, new_store
from tests.alerting.test_evaluate import active


def _write(engine: Engine, pk: int, *items: Telemetry) -> None:
    with write_transaction(engine) as conn:
        write_telemetry(conn, pk, list(items))


def test_a_resume_with_a_fidelity_mismatch_pages_until_a_good_load(sqlite_url: str) -> None:
    engine = new_store(sqlite_url)
    pk = add_run(engine, "r1")
    detail = "resume fidelity MISMATCH: 0.weight (parameters differ)"
    _write(engine, pk, CheckpointRecord(100, T0 + 10, "load", False, 0.2, 1000, "/ck.pt", detail))
    signals = evaluate(engine, Config(), T0 + 60)
    page = active(signals, "CheckpointResumeMismatch", run_id="r1")
    assert len(page) == 1 and page[0].severity == "page"
    assert "resume fidelity MISMATCH" in page[0].annotations["summary"]
    assert page[0].annotations["runbook_url"].endswith("/runbooks/checkpoint-mismatch.md")
    # a later, verified load resolves it
    ok = "resume fidelity verified: optimizer-state fingerprint matches"
    _write(engine, pk, CheckpointRecord(100, T0 + 20, "load", True, 0.2, 1000, "/ck.pt", ok))
    assert not active(evaluate(engine, Config(), T0 + 70), "CheckpointResumeMismatch")


def test_a_desynced_rank_pages_naming_ranks_and_layers(sqlite_url: str) -> None:
    engine = new_store(sqlite_url)
    pk = add_run(engine, "ddp")
    _write(engine, pk, RankCheckRecord(5, T0 + 5, "ok", world_size=2))
    assert not active(evaluate(engine, Config(), T0 + 30), "OptimizerStateDesync")
    detail = "optimizer state desync at step 10: rank(s) 1 differ from rank 0 in 1 layer(s): fc"
    _write(
        engine, pk,
        RankCheckRecord(10, T0 + 10, "desync", (0, 1), ("fc",), detail, 2),
        # a skipped check does not hide the desync
        RankCheckRecord(15, T0 + 15, "skipped", detail="ranks at different steps", world_size=2),
    )  # fmt: skip
    page = active(evaluate(engine, Config(), T0 + 30), "OptimizerStateDesync", run_id="ddp")
    assert len(page) == 1 and page[0].severity == "page"
    assert "rank(s) 1 differ from rank 0" in page[0].annotations["summary"]
    assert page[0].annotations["runbook_url"].endswith("/runbooks/optimizer-desync.md")


def test_store_only_rules_are_left_out_of_the_prometheus_rules() -> None:
    names = {alert["alert"] for alert in health_alerts(Config())}
    assert "CheckpointSaveFailures" in names
    assert not names & {"CheckpointResumeMismatch", "OptimizerStateDesync"}
