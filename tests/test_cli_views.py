"""`rmswatch report | silence list | serve | demo | --version` as a user runs them: real processes,
real sockets. Read-only commands never create a store; a bad argument is one line + exit 2."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import rmswatch
from tests.helpers import free_port, subprocess_env

pytestmark = pytest.mark.slow
EXAMPLES = "sqlite:///path/to/rmswatch.db or postgresql+psycopg://user@host/db"


def rmswatch_cli(*args: str, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rmswatch", *args],
        cwd=cwd, env=subprocess_env(), capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_version_prints_the_package_version(tmp_path: Path) -> None:
    done = rmswatch_cli("--version", cwd=tmp_path)
    assert (done.returncode, done.stdout.strip()) == (0, f"rmswatch {rmswatch.__version__}")


def test_report_on_a_missing_sqlite_file_says_so_and_creates_nothing(tmp_path: Path) -> None:
    done = rmswatch_cli("report", "--db", "sqlite:///missing.db", "--run", "x", cwd=tmp_path)
    line = one_line(done.stderr)
    assert done.returncode == 2
    assert "--db 'sqlite:///missing.db'" in line and "no such file" in line and EXAMPLES in line
    assert list(tmp_path.iterdir()) == []


def test_report_on_a_path_that_is_not_a_url_names_the_argument_and_an_example(
    tmp_path: Path,
) -> None:
    done = rmswatch_cli("report", "--db", "foo.db", "--run", "x", cwd=tmp_path)
    line = one_line(done.stderr)
    assert done.returncode == 2
    assert line == f"rmswatch report: --db 'foo.db' is not a database URL (e.g. {EXAMPLES})"
    assert list(tmp_path.iterdir()) == []


def test_report_of_an_unknown_run_names_the_run_argument(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    migrated = rmswatch_cli("migrate", "--db", f"sqlite:///{db}", cwd=tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    done = rmswatch_cli("report", "--db", f"sqlite:///{db}", "--run", "nope", cwd=tmp_path)
    assert done.returncode == 2
    assert "--run 'nope': no such run" in one_line(done.stderr)


def test_silence_list_on_a_missing_store_creates_nothing(tmp_path: Path) -> None:
    done = rmswatch_cli("silence", "--db", "sqlite:///nope.db", "list", cwd=tmp_path)
    assert done.returncode == 2 and "no such file" in one_line(done.stderr)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("port", ["99999", "0", "http"])
def test_serve_refuses_a_port_outside_1_to_65535(tmp_path: Path, port: str) -> None:
    done = rmswatch_cli("serve", "--db", f"sqlite:///{tmp_path / 's.db'}", "--port", port,
                        cwd=tmp_path)  # fmt: skip
    assert done.returncode == 2
    assert "argument --port" in done.stderr and "not a port number (1-65535)" in done.stderr
    assert "serving" not in done.stderr


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port another program (this test process) is listening on."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield int(listener.getsockname()[1])


def test_serve_on_a_taken_port_names_the_port_and_the_process_holding_it(
    tmp_path: Path, held_port: int
) -> None:
    done = rmswatch_cli("serve", "--db", f"sqlite:///{tmp_path / 's.db'}",
                        "--port", str(held_port), "--no-scheduler", cwd=tmp_path)  # fmt: skip
    line = one_line(done.stderr)
    assert done.returncode == 2
    assert f"port {held_port} on 127.0.0.1 is already in use by pid {_pid()}" in line
    assert "--port" in line and "serving" not in line


def _pid() -> int:
    import os

    return os.getpid()


def test_serve_says_serving_only_once_the_port_answers(tmp_path: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "rmswatch", "serve", "--db", f"sqlite:///{tmp_path / 's.db'}",
         "--port", str(port), "--no-scheduler"],
        cwd=tmp_path, env=subprocess_env(), stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert process.stderr is not None
        line = process.stderr.readline()  # blocks until the server says something
        assert line.startswith(f"rmswatch serving http://127.0.0.1:{port}/"), line
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # no retry: the socket was bound before the line was printed
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_demo_on_a_port_another_rmswatch_serves_says_so_and_suggests_port(tmp_path: Path) -> None:
    port = free_port()
    other = subprocess.Popen(
        [sys.executable, "-m", "rmswatch", "serve", "--db", f"sqlite:///{tmp_path / 'o.db'}",
         "--port", str(port), "--no-scheduler"],
        cwd=tmp_path, env=subprocess_env(), stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert other.stderr is not None
        assert "serving" in other.stderr.readline()
        done = rmswatch_cli("demo", "--quick", "--port", str(port), "--dir", str(tmp_path / "d"),
                            cwd=tmp_path)  # fmt: skip
        assert done.returncode == 2, done.stdout + done.stderr
        line = one_line(done.stderr)
        assert f"port {port} on 127.0.0.1 is already in use by pid {other.pid}" in line
        assert "rmswatch serve" in line and f"--port {port + 1}" in line
        assert "dashboard:" not in done.stdout  # it never pointed at someone else's server
    finally:
        other.terminate()
        other.wait(timeout=30)


def test_demo_on_a_port_another_program_holds_ends_in_one_line(
    tmp_path: Path, held_port: int
) -> None:
    done = rmswatch_cli("demo", "--quick", "--port", str(held_port), "--dir", str(tmp_path / "d"),
                        cwd=tmp_path)  # fmt: skip
    assert done.returncode == 2
    line = one_line(done.stderr)
    assert f"port {held_port} on 127.0.0.1 is already in use" in line and "--port" in line
