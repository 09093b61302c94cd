"""`rmswatch demo`: a real incident end to end on one laptop.

Starts the server on an embedded SQLite file with a demo config (SLO periods scaled down so burn
rates move within minutes), a local webhook receiver that prints each notification, and real
RMSProp trainings as child processes: healthy retrains, one that diverges, one that converges
slowly, one that resumes without its optimizer state, and one that stalls.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import requests
import yaml
from tqdm import tqdm

from rmswatch.demo.receiver import Notification, WebhookReceiver


@dataclass(frozen=True)
class Scenario:
    name: str
    job: str
    run_id: str
    model: str
    seed: int = 0


# Run in waves of two (one per core): healthy history first, so the incidents have a baseline.
WAVES: tuple[tuple[Scenario, ...], ...] = (
    (
        Scenario("healthy", "resnet-retrain", "resnet-retrain-001", "resnet18-lite", seed=1),
        Scenario("healthy", "ranker-retrain", "ranker-retrain-001", "ranker-mlp", seed=2),
    ),
    (
        Scenario("healthy", "resnet-retrain", "resnet-retrain-002", "resnet18-lite", seed=3),
        Scenario("healthy", "ctr-retrain", "ctr-retrain-001", "ctr-mlp", seed=4),
    ),
    (
        Scenario("diverge", "ranker-retrain", "ranker-retrain-002", "ranker-mlp", seed=5),
        Scenario("slow", "ctr-retrain", "ctr-retrain-002", "ctr-mlp", seed=6),
    ),
    (
        Scenario("resume", "resnet-retrain", "resnet-retrain-003", "resnet18-lite", seed=7),
        Scenario("stall", "embedding-retrain", "embedding-retrain-001", "embedding-mlp", seed=8),
    ),
)

STALL_AFTER_SECONDS = 15.0
DRIFT_INTERVAL_SECONDS = 5.0


# The built-in SLOs with their 30-day period scaled down, so the burn-rate windows (which scale
# with the period) span seconds to minutes and move while a person watches.
DEMO_SLO_PERIOD = "6h"


def demo_config(port: int, receiver_url: str) -> dict[str, Any]:
    """The demo's config: the real default SLOs and health rules, with time scaled down."""
    from rmswatch.alerting.spec import default_slos

    slos = [
        {
            **spec.model_dump(mode="json", exclude_none=True, by_alias=True),
            "period": DEMO_SLO_PERIOD,
        }
        for spec in default_slos()
    ]
    return {
        "server": {"external_url": f"http://127.0.0.1:{port}", "refresh_seconds": 5},
        "evaluation": {"interval_seconds": 2, "lookback_seconds": 60},
        "slos": slos,
        "health": {
            "stalled": {"after": f"{STALL_AFTER_SECONDS:g}s"},
            "eff_lr_jump": {"window_steps": 20, "for": "0s"},
        },
        "receivers": [{"name": "demo-webhook", "kind": "webhook", "url": receiver_url}],
        "route": {
            "receiver": "demo-webhook",
            "group_by": ["alertname", "job"],
            "group_wait": "1s",
            "group_interval": "5s",
            "repeat_interval": "1h",
        },
    }


class Demo:
    def __init__(self, *, quick: bool, port: int, workdir: Path, out: Any = sys.stdout) -> None:
        self.quick = quick
        self.port = port
        self.workdir = workdir
        self.out = out
        self.db_url = f"sqlite:///{(workdir / 'demo.db').resolve()}"
        self.children: list[subprocess.Popen[str]] = []
        self.receiver = WebhookReceiver(
            log_path=workdir / "notifications.jsonl", on_notification=self._print_notification
        )
        self._print_lock = threading.Lock()
        # the server's ingest token for this demo only (the drift feed below posts with it)
        self.token = secrets.token_urlsafe(24)
        self._stop = threading.Event()

    # -- output -------------------------------------------------------------------------
    def say(self, message: str) -> None:
        with self._print_lock:
            tqdm.write(message, file=self.out)

    def _print_notification(self, n: Notification) -> None:
        mark = "FIRING " if n.status == "firing" else "RESOLVED"
        severity = n.labels.get("severity", "")
        self.say(
            f"  [webhook] {mark} {severity:6} {n.alertname} job={n.labels.get('job', '')} "
            f"{_run_of(n)} — {n.annotations.get('summary', '')}"
        )

    # -- processes ----------------------------------------------------------------------
    def _spawn(self, args: Sequence[str], **kwargs: Any) -> subprocess.Popen[str]:
        env = dict(os.environ, PYTHONUNBUFFERED="1", RMSWATCH_TOKEN=self.token)
        # Own process group, so Ctrl-C in the terminal reaches us alone and we stop the children
        # in order (trainings first, then the server), leaving the SQLite file consistent.
        proc: subprocess.Popen[str] = subprocess.Popen(
            [sys.executable, *args], env=env, text=True, start_new_session=True, **kwargs
        )
        self.children.append(proc)
        return proc

    def shutdown(self) -> None:
        self._stop.set()
        self.stop_children()
        self.receiver.stop()

    def stop_children(self) -> None:
        """Trainings first (they close their runs), then the server; nothing is orphaned."""
        for proc in reversed(self.children):
            _terminate_group(proc, timeout=15)

    def start_server(self, config_path: Path) -> subprocess.Popen[str]:
        from rmswatch._ports import ensure_free

        # PortInUseError (one line naming the holder, suggesting --port) before anything starts
        ensure_free("127.0.0.1", self.port)
        log = (self.workdir / "server.log").open("w")
        proc = self._spawn(
            [
                "-m",
                "rmswatch",
                "serve",
                "--db",
                self.db_url,
                "--config",
                str(config_path),
                "--port",
                str(self.port),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 90
        url = f"http://127.0.0.1:{self.port}/healthz"
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"the server exited with {proc.returncode}; see {self.workdir / 'server.log'}"
                )
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return self._own_server(proc)
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"the server did not answer {url} within 90 s")

    def _own_server(self, proc: subprocess.Popen[str]) -> subprocess.Popen[str]:
        """The server answering must be the one this demo started, not another on its port."""
        from rmswatch._ports import PortInUseError, holder_of, listens_on

        if not listens_on(proc.pid, self.port):
            raise PortInUseError("127.0.0.1", self.port, holder_of(self.port))
        return proc

    def post_drift(self) -> None:
        """A production monitor posting the deployed ranker's drift score through the ingest API
        every few seconds (a slow upward creep after the failed retrain), for the executive
        view's model-drift KPI."""
        url = f"http://127.0.0.1:{self.port}/api/v1/ingest"
        headers = {"Authorization": f"Bearer {self.token}"}
        value = 0.04
        while not self._stop.wait(DRIFT_INTERVAL_SECONDS):
            value = round(value * 1.03 + 0.002, 4)
            item = {"kind": "sli", "job": "ranker-retrain", "name": "model_drift",
                    "value": value, "time": time.time()}  # fmt: skip
            try:
                requests.post(url, json={"version": 1, "items": [item]}, headers=headers,
                              timeout=5)  # fmt: skip
            except requests.RequestException:
                pass  # the server is starting or stopping; the next sample will do

    def train(self, scenario: Scenario, position: int) -> threading.Thread:
        args = [
            "-m",
            "rmswatch.demo.scenarios",
            "--scenario",
            scenario.name,
            "--db",
            self.db_url,
            "--run-id",
            scenario.run_id,
            "--job",
            scenario.job,
            "--workdir",
            str(self.workdir),
            "--seed",
            str(scenario.seed),
            "--label",
            f"model={scenario.model}",
            "--label",
            "cluster=laptop",
        ]
        if self.quick:
            args.append("--quick")
        proc = self._spawn(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        total = 160 if self.quick else 600
        bar = tqdm(
            total=total,
            desc=f"{scenario.run_id} ({scenario.name})",
            position=position,
            leave=True,
            file=self.out,
            unit="step",
            dynamic_ncols=True,
        )

        def follow() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                try:
                    event = json.loads(line)
                except ValueError:
                    self.say(f"  {scenario.run_id}: {line.rstrip()}")
                    continue
                if event.get("event") == "start":
                    bar.total = int(event["steps"])
                    bar.refresh()
                elif "step" in event and "event" not in event:
                    bar.n = min(bar.total or total, int(event.get("done", event["step"])))
                    bar.set_postfix(loss=f"{event.get('loss', float('nan')):.3f}")
                    bar.refresh()
                elif event.get("event") == "stalled":
                    self.say(
                        f"  {scenario.run_id}: stopped stepping at step {event['step']} "
                        "(simulated data-loader deadlock)"
                    )
                    threading.Thread(
                        target=self._end_stall, args=(scenario, proc), daemon=True
                    ).start()
                elif event.get("event") == "finished":
                    bar.set_postfix(status=event["status"])
            proc.wait()
            bar.close()

        thread = threading.Thread(target=follow, daemon=True)
        thread.start()
        return thread

    def _end_stall(self, scenario: Scenario, proc: subprocess.Popen[str]) -> None:
        """Leave the stalled job hanging until its page arrives (bounded), then stop it."""
        self.wait_for(
            lambda n: n.labels.get("run_id") == scenario.run_id and n.status == "firing",
            timeout=STALL_AFTER_SECONDS + 60,
        )
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)

    def wait_for(self, predicate: Callable[[Notification], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.receiver.received(predicate):
                return True
            time.sleep(0.5)
        return False

    # -- the whole demo -----------------------------------------------------------------
    def run(self) -> int:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for stale in ("demo.db", "demo.db-wal", "demo.db-shm", "notifications.jsonl"):
            (self.workdir / stale).unlink(missing_ok=True)
        receiver_url = self.receiver.start()
        config_path = self.workdir / "demo.yaml"
        config_path.write_text(
            yaml.safe_dump(demo_config(self.port, receiver_url), sort_keys=False)
        )
        self.say(f"rmswatch demo — files in {self.workdir}/ (store: {self.db_url})")
        self.say(
            "  SLO periods are scaled down to minutes in this demo so burn rates move "
            "while you watch; production SLOs use 30-day periods."
        )
        self.say(f"  webhook receiver: {receiver_url} (each notification is printed below)")
        self.start_server(config_path)
        threading.Thread(target=self.post_drift, name="demo-drift", daemon=True).start()
        self.say(
            f"  dashboard: http://127.0.0.1:{self.port}/  (on-call view: "
            f"http://127.0.0.1:{self.port}/oncall)"
        )
        for wave in WAVES:
            threads = [self.train(s, position=i) for i, s in enumerate(wave)]
            for thread in threads:
                thread.join()
        diverged = self.wait_for(is_divergence_page, timeout=60)
        self.say("")
        self.say("all scenarios finished. " + divergence_outcome(self.db_url, diverged))
        self.say(
            f"  open http://127.0.0.1:{self.port}/oncall?job=ranker-retrain&run={DIVERGED_RUN}"
            " to triage it, and export the postmortem from /postmortem."
        )
        if self.quick:
            return 0 if diverged else 1
        self.say("serving the dashboard until Ctrl-C ...")
        while True:
            time.sleep(3600)


def _run_of(n: Notification) -> str:
    """The run an alert is about: health alerts carry it as an annotation (the fingerprint leaves
    run_id out so a resumed run keeps its alert); SLO alerts are per job and have none."""
    return n.labels.get("run_id") or n.annotations.get("run_id", "")


DIVERGED_RUN = "ranker-retrain-002"
DIVERGENCE_ALERTS = ("TrainingNonFinite", "TrainingLossDivergence")


def is_divergence_page(n: Notification) -> bool:
    return (
        n.status == "firing"
        and n.labels.get("severity") == "page"
        and n.alertname in DIVERGENCE_ALERTS
        and _run_of(n) == DIVERGED_RUN
    )


def divergence_outcome(db_url: str, delivered: bool) -> str:
    """What happened to the diverging run's page, from the store: delivered, decided but not
    delivered (and why), or never raised (the detector missed it: said so, with the numbers)."""
    if delivered:
        return "The divergence page reached the webhook."
    from sqlalchemy import select

    from rmswatch.store.engine import make_engine
    from rmswatch.store.models_alerting import AlertFiringRow, NotificationRow
    from rmswatch.store.queries import run as run_record
    from rmswatch.store.queries import step_series

    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            fired = conn.execute(
                select(AlertFiringRow.alertname, AlertFiringRow.started_at).where(
                    AlertFiringRow.run_id == DIVERGED_RUN,
                    AlertFiringRow.alertname.in_(DIVERGENCE_ALERTS),
                    AlertFiringRow.severity == "page",
                )
            ).first()
            waiting = conn.execute(
                select(NotificationRow.attempts, NotificationRow.last_error).where(
                    NotificationRow.delivered_at.is_(None)
                )
            ).all()
        if fired is not None:
            errors = sorted({e for _, e in waiting if e})
            return (
                f"WARNING: {fired.alertname} fired on {DIVERGED_RUN} at {fired.started_at:%H:%M:%S}"
                f" but its notification had not reached the webhook: {len(waiting)} waiting in "
                f"the outbox" + (f" (last error: {errors[-1]})" if errors else "") + "."
            )
        record = run_record(engine, DIVERGED_RUN)
        if record is None:
            return f"WARNING: {DIVERGED_RUN} never reached the store, so nothing could page."
        losses = step_series(engine, int(record["run_pk"]), ["loss", "nonfinite_loss"])
        finite = losses["loss"][losses["loss"].abs() < float("inf")]
        return (
            f"WARNING: no divergence page fired for {DIVERGED_RUN} (the detector missed it): "
            f"status {record['status']}, loss {finite.iloc[0]:.3g} -> {finite.max():.3g} at its "
            f"highest, {int((losses['nonfinite_loss'] > 0).sum())} non-finite steps."
            if len(finite)
            else f"WARNING: no divergence page fired for {DIVERGED_RUN} (the detector missed it)."
        )
    finally:
        engine.dispose()


def _terminate_group(proc: subprocess.Popen[str], timeout: float) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=timeout)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run_demo(*, quick: bool = False, port: int = 8050, workdir: str = "rmswatch-demo") -> int:
    demo = Demo(quick=quick, port=port, workdir=Path(workdir))
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, _interrupt)  # a SIGTERM stops the demo like Ctrl-C
    try:
        return demo.run()
    except KeyboardInterrupt:
        demo.say("\nstopping: trainings, then the server ...")
        return 0
    finally:
        demo.shutdown()
        signal.signal(signal.SIGTERM, previous)
