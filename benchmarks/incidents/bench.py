"""Detection benchmark: the labelled corpus through the real evaluator, lifecycle and router.

Each case is a real training (benchmarks/incidents/corpus.py) recorded on a simulated clock.
The replay writes its telemetry into a fresh SQLite store through the store's own write path
as simulated time passes, and runs the scheduler's `run_tick` (evaluate -> lifecycle -> route
-> outbox) every `interval` simulated seconds with that time injected as `now`. Nothing is
sent: the outbox rows say when each notification would have gone out.

    PYTHONPATH=. python -m benchmarks.incidents.bench            # table to stdout
    PYTHONPATH=. python -m benchmarks.incidents.bench --write    # + benchmarks/results/incidents.md

Recordings are cached in benchmarks/incidents/.cache (keyed by corpus.py's hash); `--retrain`
ignores the cache.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import pickle
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from benchmarks.incidents.corpus import CASES, GAP, PERIOD, Recording, record_all
from rmswatch.alerting.scheduler import IncrementalEvaluate, run_tick
from rmswatch.config import Config
from rmswatch.store.engine import make_engine, upgrade, write_transaction
from rmswatch.store.models_alerting import NotificationRow
from rmswatch.store.writes import close_run, upsert_run, write_telemetry

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
INTERVAL = 10.0  # evaluation tick, simulated seconds
GROUP_WAIT = 30.0  # the route's group_wait (Alertmanager's default)
TAIL = 1200.0  # simulated seconds evaluated after the last run ended
DIVERGENCE_PAGE_STEPS = 50  # target: a divergence pages within this many telemetry steps


def bench_config() -> Config:
    return Config.model_validate(
        {
            "evaluation": {"interval_seconds": INTERVAL},
            # never contacted: the outbox rows are the measurement
            "receivers": [{"name": "oncall", "kind": "webhook", "url": "http://127.0.0.1:9/hook"}],
            "route": {
                "receiver": "oncall",
                "group_by": ["alertname", "job"],
                "group_wait": f"{GROUP_WAIT:g}s",
            },  # fmt: skip
        }
    )


def recordings(retrain: bool = False) -> list[Recording]:
    digest = hashlib.sha256((HERE / "corpus.py").read_bytes()).hexdigest()[:16]
    cache = HERE / ".cache" / f"corpus-{digest}.pickle"
    cases = {c.name: c for c in CASES}
    if cache.exists() and not retrain:
        with cache.open("rb") as f:
            cached = pickle.load(f)
        return [Recording(cases[name], run, items, status) for name, run, items, status in cached]
    started = time.perf_counter()
    recorded = record_all()
    print(f"trained {len(recorded)} runs in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    cache.parent.mkdir(exist_ok=True)
    partial = cache.with_suffix(".partial")
    with partial.open("wb") as f:
        pickle.dump([(r.case.name, r.run, r.items, r.status) for r in recorded], f)
    partial.replace(cache)
    return recorded


def schedule(recorded: list[Recording]) -> list[Recording]:
    """Jobs side by side: each job's runs one after another in corpus order (its history
    first), every job starting at the same time, as on a shared cluster."""
    out, next_start = [], {}
    origin = min(r.start for r in recorded)
    for r in recorded:
        start = next_start.get(r.run.job, origin)
        shift = start - r.start
        moved = Recording(
            r.case,
            dataclasses.replace(r.run, started_at=r.run.started_at + shift),
            [dataclasses.replace(i, time=i.time + shift) for i in r.items],
            dataclasses.replace(r.status, time=r.status.time + shift),
        )
        out.append(moved)
        next_start[r.run.job] = moved.end + GAP
    return out


@dataclass
class Firing:
    alertname: str
    severity: str
    job: str
    run_id: str
    fingerprint: str
    time: float
    notified: float | None = None


@dataclass
class Replay:
    firings: list[Firing] = field(default_factory=list)
    ticks: int = 0
    seconds: float = 0.0


def replay(recorded: list[Recording], config: Config, db_url: str) -> Replay:
    engine = make_engine(db_url)
    upgrade(engine)
    evaluate = IncrementalEvaluate()
    pending = {r.run.run_id: sorted(r.items, key=lambda i: i.time) for r in recorded}
    pks: dict[str, int] = {}
    closed: set[str] = set()
    result = Replay()
    now = min(r.start for r in recorded)
    end = max(r.end for r in recorded) + TAIL
    started = time.perf_counter()
    while now <= end:
        with write_transaction(engine) as conn:
            for r in recorded:
                run_id = r.run.run_id
                if r.start > now or run_id in closed:
                    continue
                if run_id not in pks:
                    pks[run_id] = upsert_run(conn, r.run, reopen=True)
                items = pending[run_id]
                due = [i for i in items if i.time <= now]
                if due:
                    write_telemetry(conn, pks[run_id], due)
                    pending[run_id] = items[len(due) :]
                if r.end <= now:
                    close_run(conn, pks[run_id], r.status)
                    closed.add(run_id)
        moment = datetime.fromtimestamp(now, tz=UTC)
        tick = run_tick(engine, config, moment, evaluate)
        result.ticks += 1
        for t in tick.transitions:
            if t.to_state == "firing":
                labels_severity = _severity(engine, t.fingerprint)
                result.firings.append(
                    Firing(t.alertname, labels_severity, t.job, t.run_id, t.fingerprint, now)
                )
        now += INTERVAL
        if result.ticks % 100 == 0:
            print(f"  tick {result.ticks}: {now - end:.0f} s to go", file=sys.stderr)
    result.seconds = time.perf_counter() - started
    with engine.connect() as conn:
        notes = conn.execute(
            select(NotificationRow.created_at, NotificationRow.fingerprints).where(
                NotificationRow.status == "firing"
            ).order_by(NotificationRow.id)
        ).all()  # fmt: skip
    sent = [(_epoch(created), set(fps)) for created, fps in notes]
    for firing in result.firings:
        firing.notified = next(
            (t for t, fps in sent if firing.fingerprint in fps and t >= firing.time), None
        )
    engine.dispose()
    return result


def _severity(engine: Any, fingerprint: str) -> str:
    from rmswatch.store.models_alerting import AlertRow

    with engine.connect() as conn:
        value = conn.execute(
            select(AlertRow.severity).where(AlertRow.fingerprint == fingerprint)
        ).scalar_one()
    return str(value)


def _epoch(value: datetime) -> float:
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


# ------------------------------------------------------------------------------- scoring


def _owner(firing: Firing, recorded: list[Recording]) -> Recording | None:
    """The run an alert is about: its run id, or (an SLO alert per job) the job's run that
    was running, else the job's latest run to have started, at the firing time."""
    by_id = {r.run.run_id: r for r in recorded}
    if firing.run_id in by_id:
        return by_id[firing.run_id]
    same_job = [r for r in recorded if r.run.job == firing.job and r.start <= firing.time]
    return max(same_job, key=lambda r: r.start, default=None)


def _onset_time(r: Recording) -> float:
    onset = r.case.onset_step or 0
    steps = [s for s in r.steps if s.step >= onset + (r.run.resumed_from_step or 0)]
    return steps[0].time if steps and onset else r.start


def _steps_between(r: Recording, start: float, end: float) -> int:
    return sum(1 for s in r.steps if start <= s.time <= end)


def score(recorded: list[Recording], result: Replay) -> dict[str, Any]:
    per_run: dict[str, list[Firing]] = {r.run.run_id: [] for r in recorded}
    for firing in result.firings:
        owner = _owner(firing, recorded)
        if owner is not None:
            per_run[owner.run.run_id].append(firing)
    incidents, healthy = [], []
    for r in recorded:
        firings = per_run[r.run.run_id]
        if r.case.healthy:
            healthy.append({"recording": r, "firings": firings})
            continue
        onset = _onset_time(r)
        hits = [f for f in firings if f.alertname in r.case.detected_by and f.time >= onset]
        first = min(hits, key=lambda f: f.time, default=None)
        if first is not None:
            # the on-call heard of it with the first notification about the run since onset
            # (an inhibited ticket is told through the page that inhibits it)
            told = [f.notified for f in firings if f.notified is not None and f.time >= onset]
            first = dataclasses.replace(first, notified=min(told, default=None))
        incidents.append({
            "recording": r, "onset": onset, "first": first, "firings": firings,
            "steps": _steps_between(r, onset, first.time) if first else None,
        })  # fmt: skip
    return {"incidents": incidents, "healthy": healthy}


def _fmt_s(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds:.0f}"


def render(recorded: list[Recording], result: Replay, scored: dict[str, Any], command: str) -> str:
    notify_target = INTERVAL + GROUP_WAIT
    lines = [
        "## Incident detection: the labelled corpus",
        "",
        f"Command: `{command}` (replay {result.ticks} ticks in {result.seconds:.0f} s on the "
        "reference box; training the corpus once takes about 4 minutes and is cached).",
        "",
        f"{len(recorded)} real RMSProp trainings on the CPU (`benchmarks/incidents/corpus.py`), "
        f"replayed on a simulated clock ({PERIOD:g} s per training iteration) into a SQLite store "
        f"and evaluated by the real scheduler tick every {INTERVAL:g} s with the default health "
        f"rules and SLOs; route `group_wait` {GROUP_WAIT:g} s. Time to detect is from the onset "
        "(the first step of the cause) to the tick at which the alert fired; *notified* is "
        "from that firing to the first outbox row about the run since onset (an inhibited ticket "
        "is told through the page that inhibits it). Targets: recall 100%; 0 false pages and "
        f"0 false tickets on healthy runs; a divergence page within {DIVERGENCE_PAGE_STEPS} "
        f"telemetry steps; a notification within one tick + group_wait ({notify_target:g} s).",
        "",
        "| failure mode | run | onset step | detected | alert | severity | steps to detect "
        "| seconds to detect | notified after (s) | other alerts on the run | target |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    detected = 0
    for item in scored["incidents"]:
        r, first = item["recording"], item["first"]
        missed = []
        if first is None:
            missed.append("not detected")
        else:
            detected += 1
            if (r.case.failure_mode or "").startswith("F1") and first.severity == "page" and (
                item["steps"] > DIVERGENCE_PAGE_STEPS
            ):  # fmt: skip
                missed.append(f"page after {item['steps']} steps > {DIVERGENCE_PAGE_STEPS}")
            if first.notified is None:
                missed.append("never notified")
            elif first.notified - first.time > notify_target:
                missed.append(f"notified after {first.notified - first.time:.0f} s")
        verdict = "met" if not missed else "**missed**: " + "; ".join(missed)
        others = sorted(
            {
                f"{f.alertname} ({f.severity})"
                for f in item["firings"]
                if first is None or (f.alertname, f.time) != (first.alertname, first.time)
            }
        )
        lines.append(
            f"| {r.case.failure_mode} | {r.run.run_id} | {r.case.onset_step} | "
            f"{'yes' if first else '**no**'} | {first.alertname if first else '—'} | "
            f"{first.severity if first else '—'} | "
            f"{item['steps'] if first else '—'} | "
            f"{_fmt_s(first.time - item['onset'] if first else None)} | "
            f"{_fmt_s(first.notified - first.time if first and first.notified else None)} | "
            f"{', '.join(others) or '—'} | {verdict} |"
        )
    lines += [
        "",
        "| healthy run | kind | pages | tickets |",
        "|---|---|---|---|",
    ]
    false_pages = false_tickets = 0
    for item in scored["healthy"]:
        r = item["recording"]
        pages = [f for f in item["firings"] if f.severity == "page"]
        tickets = [f for f in item["firings"] if f.severity == "ticket"]
        false_pages += len(pages)
        false_tickets += len(tickets)
        lines.append(
            f"| {r.run.run_id} | {r.case.note or 'MLP, constant lr'} | "
            f"{', '.join(f.alertname for f in pages) or '0'} | "
            f"{', '.join(f.alertname for f in tickets) or '0'} |"
        )
    n_inc, n_healthy = len(scored["incidents"]), len(scored["healthy"])
    lines += [
        "",
        f"**Totals:** recall {detected}/{n_inc} = {detected / n_inc:.0%} (target 100%); "
        f"false pages {false_pages} ({false_pages / n_healthy:.2f} per healthy run, target 0); "
        f"false tickets {false_tickets} ({false_tickets / n_healthy:.2f} per healthy run, "
        f"target 0) over {n_healthy} healthy runs.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--write", action="store_true", help="write benchmarks/results/incidents.md"
    )
    parser.add_argument("--retrain", action="store_true")
    parser.add_argument("--only", nargs="*", help="run ids to replay (debugging)")
    parser.add_argument("--train-only", action="store_true", help="record the corpus and stop")
    args = parser.parse_args(argv)
    recorded = schedule(recordings(args.retrain))
    if args.train_only:
        return 0
    if args.only:
        recorded = [r for r in recorded if r.run.run_id in args.only]
    with tempfile.TemporaryDirectory() as tmp:
        result = replay(recorded, bench_config(), f"sqlite:///{tmp}/incidents.db")
    scored = score(recorded, result)
    text = render(
        recorded, result, scored, "PYTHONPATH=. python -m benchmarks.incidents.bench --write"
    )
    print(text)
    if args.write:
        (ROOT / "benchmarks" / "results" / "incidents.md").write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    assert len(CASES) > 0
    sys.exit(main())
