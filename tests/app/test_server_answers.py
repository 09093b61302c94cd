"""Clear answers instead of 500s (issue 11): a page while the store is down, odd runbook names,
what ingest refused on /healthz, and config files the CLI refuses in plain words."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from sqlalchemy import Engine

from rmswatch.collectors.wire import encode_batch
from rmswatch.config import Config
from rmswatch.server import build_server
from rmswatch.store.engine import make_engine
from tests.factories import run_info, step_record
from tests.helpers import free_port, subprocess_env


def _serve(engine: Engine, environ: dict[str, str] | None = None) -> tuple[str, object]:
    server = build_server(Config(), engine, start_scheduler=False, environ=environ or {})
    port = free_port()
    server.start_in_thread("127.0.0.1", port)
    return f"http://127.0.0.1:{port}", server


def test_the_front_door_while_the_store_is_down_is_a_503_page_not_a_500() -> None:
    unreachable = make_engine(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/none")
    base, server = _serve(unreachable)
    try:
        response = requests.get(f"{base}/", allow_redirects=False, timeout=30)
    finally:
        server.shutdown()  # type: ignore[attr-defined]
        unreachable.dispose()
    assert response.status_code == 503
    assert "store is unreachable" in response.text and "/healthz" in response.text


@pytest.mark.parametrize("name", ["nan.md%00.txt", "nan.md%00", "%00", "nan.md.bak", "missing.md"])
def test_a_runbook_name_with_odd_bytes_is_404(engine: Engine, name: str) -> None:
    base, server = _serve(engine)
    try:
        assert requests.get(f"{base}/runbooks/{name}", timeout=10).status_code == 404
        assert requests.get(f"{base}/runbooks/nan.md", timeout=10).status_code == 200
    finally:
        server.shutdown()  # type: ignore[attr-defined]


def test_healthz_reports_the_records_ingest_refused(engine: Engine) -> None:
    base, server = _serve(engine, {"RMSWATCH_TOKEN": "t"})
    try:
        assert requests.get(f"{base}/healthz", timeout=10).text == "ok\n"
        body = json.loads(encode_batch(run_info(), [step_record(0), step_record(1)], open_run=True))
        body["items"][1]["time"] = "NaN"
        answer = requests.post(
            f"{base}/api/v1/ingest",
            data=json.dumps(body),
            headers={"Authorization": "Bearer t", "Content-Type": "application/json"},
            timeout=10,
        )
        assert answer.status_code == 422
        health = requests.get(f"{base}/healthz", timeout=10)
    finally:
        server.shutdown()  # type: ignore[attr-defined]
    assert health.status_code == 200
    assert "ingest rejected 1 records" in health.text and "items[1].time" in health.text


def _serve_cli(tmp_path: Path, config: bytes, env: dict[str, str] | None = None) -> str:
    path = tmp_path / "rmswatch.yaml"
    path.write_bytes(config)
    result = subprocess.run(
        [sys.executable, "-m", "rmswatch", "serve", "--db", f"sqlite:///{tmp_path}/x.db",
         "--config", str(path), "--port", str(free_port()), "--no-scheduler"],
        env=subprocess_env() | (env or {}), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr


@pytest.mark.slow
def test_a_binary_config_file_is_a_clear_error(tmp_path: Path) -> None:
    stderr = _serve_cli(tmp_path, b"\x89PNG\r\n\x1a\n\xff\xfe\x00garbage")
    assert "not a text file: byte" in stderr and "is not UTF-8" in stderr


@pytest.mark.slow
def test_duplicate_yaml_keys_are_refused_naming_the_key(tmp_path: Path) -> None:
    stderr = _serve_cli(tmp_path, b"server:\n  port: 8050\n  port: 9000\n")
    assert "duplicate key 'port' (first on line 2)" in stderr and "line 3" in stderr


@pytest.mark.slow
def test_an_empty_password_variable_is_a_clear_error(tmp_path: Path) -> None:
    config = b"server: {auth: {basic: {username: oncall, password_env: RMSWATCH_TEST_PW}}}\n"
    stderr = _serve_cli(tmp_path, config, {"RMSWATCH_TEST_PW": ""})
    assert "$RMSWATCH_TEST_PW is empty" in stderr
