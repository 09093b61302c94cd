"""Store unreachable: training goes on, telemetry is buffered, and the writer reconnects.

PostgreSQL: a dedicated throwaway cluster started by the test (never the shared server) is
stopped and started again. SQLite: a trainer running as an unprivileged user finds the store
file read-only, then writable.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from rmswatch.collectors.store_writer import StoreWriter
from rmswatch.store.engine import make_engine, upgrade
from rmswatch.trainer_hooks.records import RunStatus
from tests.factories import T0, run_info, step_record
from tests.helpers import free_port, subprocess_env, unavailable
from tests.integration.store_support import stored_steps, wait_ready

PG_BIN = Path("/usr/lib/postgresql/15/bin")


class Cluster:
    def __init__(self, root: Path, port: int) -> None:
        self.root, self.port = root, port
        self.data = root / "data"
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"

    def _as_postgres(self, *args: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *args],
            check=True,
            capture_output=True,
            timeout=120,
        )

    def init(self) -> None:
        self._as_postgres(
            str(PG_BIN / "initdb"),
            "-D",
            str(self.data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._as_postgres(
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.root / "log"),
            "-w",
            "-t",
            "60",
            "start",
        )

    def stop(self) -> None:
        self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")


@pytest.fixture
def pg_cluster() -> Iterator[Cluster]:
    if os.geteuid() != 0 or not (PG_BIN / "initdb").exists() or not shutil.which("runuser"):
        unavailable("a throwaway PostgreSQL cluster needs root, runuser and PostgreSQL 15")
    root = Path(tempfile.mkdtemp(prefix="rmswatch-pg-"))
    pw = pwd.getpwnam("postgres")
    os.chown(root, pw.pw_uid, pw.pw_gid)
    cluster = Cluster(root, free_port())
    cluster.init()
    cluster.start()
    try:
        yield cluster
    finally:
        try:
            cluster.stop()
        except subprocess.CalledProcessError:
            pass  # already stopped by the test
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.integration
def test_writer_buffers_while_postgresql_is_down_and_reconnects_when_it_returns(
    pg_cluster: Cluster,
) -> None:
    writer = StoreWriter(pg_cluster.url, flush_interval=60.0)
    writer.open(run_info())
    writer.write([step_record(s) for s in range(5)])
    writer.flush()
    assert stored_steps(pg_cluster.url)["run-1"] == [0, 1, 2, 3, 4]

    pg_cluster.stop()
    writer.write([step_record(s) for s in range(5, 10)])  # training goes on
    writer.flush()
    stats = writer.stats()
    assert (stats.buffered, stats.dropped) == (5, 0) and stats.flush_errors >= 1

    pg_cluster.start()
    writer.flush()
    assert stored_steps(pg_cluster.url)["run-1"] == list(range(10))
    writer.close(RunStatus(T0 + 20, "succeeded"))
    assert writer.stats().dropped == 0 and writer.stats().buffered == 0


@pytest.mark.slow
def test_trainer_buffers_while_the_sqlite_file_is_read_only_then_writes_it_all() -> None:
    if os.geteuid() != 0:
        unavailable("needs root to run the trainer as `nobody` (root ignores file permissions)")
    root = Path(tempfile.mkdtemp(prefix="rmswatch-ro-"))
    try:
        root.chmod(0o777)
        url = f"sqlite:///{root}/rmswatch.db"
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        # owned by root, 0644: `nobody` can read the store but not write it
        os.chmod(root / "rmswatch.db", 0o644)
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.integration.store_child",
                url,
                "ro-run",
                "60",
                "--flush",
                "0.1",
                "--sleep",
                "0.05",
                "--as-user",
                "nobody",
            ],
            env=subprocess_env(HOME=str(root)),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=str(Path(__file__).resolve().parents[2]),
        )
        try:
            wait_ready(proc)
            assert proc.stdout is not None
            while not proc.stdout.readline().startswith("step 20 "):
                pass
            assert stored_steps(url) == {}
            nobody = pwd.getpwnam("nobody")
            os.chown(root / "rmswatch.db", nobody.pw_uid, nobody.pw_gid)
            out, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
        assert proc.returncode == 0, err
        _, dropped, flush_errors = out.strip().splitlines()[-1].split()
        assert dropped == "0" and int(flush_errors) >= 1
        assert stored_steps(url)["ro-run"] == list(range(60))
    finally:
        shutil.rmtree(root, ignore_errors=True)
