"""The server over plain HTTP on 127.0.0.1: the front door redirect, basic auth and the trusted
proxy header (a real werkzeug server thread and `requests`, a SQLite store)."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pytest
import requests
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from rmswatch.alerting.signals import Signal
from rmswatch.config import Config
from rmswatch.server import build_server
from rmswatch.store.engine import make_engine
from tests.helpers import free_port


def _serve(
    engine: Engine, config: dict[str, Any], environ: Mapping[str, str] | None = None
) -> tuple[str, Any]:
    server = build_server(
        Config.model_validate(config), engine, start_scheduler=False, environ=environ or {}
    )
    port = free_port()
    server.start_in_thread("127.0.0.1", port)
    return f"http://127.0.0.1:{port}", server


def _fire(engine: Engine) -> None:
    from rmswatch.alerting.lifecycle import apply_signals

    signal = Signal(
        "TrainingNonFinite",
        {"alertname": "TrainingNonFinite", "job": "j", "run_id": "r", "severity": "page"},
        "page", True, 1.0, 0.0, {"summary": "NaN"},
    )  # fmt: skip
    with Session(engine) as session:
        apply_signals(session, [signal], datetime.now(UTC))
        session.commit()


def test_root_goes_to_executive_when_nothing_fires_and_to_oncall_when_something_does(
    engine: Engine,
) -> None:
    url, server = _serve(engine, {})
    try:
        quiet = requests.get(f"{url}/", allow_redirects=False, timeout=10)
        assert (quiet.status_code, quiet.headers["Location"]) == (302, "/executive")
        _fire(engine)
        firing = requests.get(f"{url}/", allow_redirects=False, timeout=10)
        assert (firing.status_code, firing.headers["Location"]) == (302, "/oncall")
    finally:
        server.shutdown()


def test_basic_auth_answers_401_without_credentials_and_200_with_them(engine: Engine) -> None:
    config = {"server": {"auth": {"basic": {"username": "oncall", "password_env": "PW_VAR"}}}}
    url, server = _serve(engine, config, {"PW_VAR": "s3cret"})
    try:
        bare = requests.get(f"{url}/executive", timeout=10)
        assert bare.status_code == 401 and "Basic" in bare.headers["WWW-Authenticate"]
        wrong = requests.get(f"{url}/executive", auth=("oncall", "nope"), timeout=10)
        assert wrong.status_code == 401
        good = requests.get(f"{url}/executive", auth=("oncall", "s3cret"), timeout=10)
        assert good.status_code == 200
        token = base64.b64encode(b"oncall:s3cret").decode()
        layout = requests.get(
            f"{url}/_dash-layout", headers={"Authorization": f"Basic {token}"}, timeout=10
        )
        assert layout.status_code == 200
        assert requests.get(f"{url}/healthz", timeout=10).status_code == 200
    finally:
        server.shutdown()


def test_basic_auth_without_a_password_in_the_environment_refuses_to_start(
    engine: Engine,
) -> None:
    config = {"server": {"auth": {"basic": {"username": "oncall", "password_env": "PW_VAR"}}}}
    from rmswatch.config import ConfigError

    with pytest.raises(ConfigError, match=r"\$PW_VAR is empty"):
        build_server(Config.model_validate(config), engine, start_scheduler=False, environ={})


def test_a_trusted_proxy_header_lets_requests_in_and_its_absence_is_403(engine: Engine) -> None:
    url, server = _serve(engine, {"server": {"auth": {"trusted_header": "X-Forwarded-User"}}})
    try:
        assert requests.get(f"{url}/oncall", timeout=10).status_code == 403
        empty = requests.get(f"{url}/oncall", headers={"X-Forwarded-User": ""}, timeout=10)
        assert empty.status_code == 403
        proxied = requests.get(f"{url}/oncall", headers={"X-Forwarded-User": "ada"}, timeout=10)
        assert proxied.status_code == 200
    finally:
        server.shutdown()


def test_healthz_answers_ok_while_the_store_answers(engine: Engine) -> None:
    base, server = _serve(engine, {})
    try:
        response = requests.get(f"{base}/healthz", timeout=10)
    finally:
        server.shutdown()
    assert (response.status_code, response.text) == (200, "ok\n")


def test_healthz_answers_503_when_the_store_is_unreachable() -> None:
    # a real PostgreSQL URL on a port where nothing listens: every connection is refused
    unreachable = make_engine(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/none")
    base, server = _serve(unreachable, {})
    try:
        response = requests.get(f"{base}/healthz", timeout=30)
    finally:
        server.shutdown()
        unreachable.dispose()
    assert response.status_code == 503 and "store unreachable" in response.text


@pytest.mark.slow
def test_serve_stops_cleanly_on_sigterm(sqlite_url: str) -> None:
    import signal
    import subprocess
    import sys

    from tests.helpers import subprocess_env, wait_until

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "rmswatch", "serve", "--db", sqlite_url, "--port", str(port)],
        env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_until(lambda: requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).ok,
                   timeout=90, what="rmswatch serve to answer")  # fmt: skip
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize(
    ("bad_yaml", "named"),
    [
        # a typo of the receiver's name in the route
        ("receivers: [{name: oncall, url: 'http://127.0.0.1:9/hook'}]\n"
         "route: {receiver: oncal}\n", ("route", "oncal", "oncall")),
        ("slos: [{name: x, sli: {kind: retrain_success}, objective: 120}]\n",
         ("slos.0.objective", "(0, 100)", "120")),
        ("server: {prot: 8050}\n", ("server.prot", "unknown key")),
    ],
)  # fmt: skip
def test_serve_refuses_to_start_on_a_bad_config_naming_the_file_and_key(
    sqlite_url: str, tmp_path: Any, bad_yaml: str, named: tuple[str, ...]
) -> None:
    import subprocess
    import sys

    from tests.helpers import subprocess_env

    config = tmp_path / "rmswatch.yaml"
    config.write_text(bad_yaml)
    port = free_port()
    result = subprocess.run(
        [sys.executable, "-m", "rmswatch", "serve", "--db", sqlite_url, "--config", str(config),
         "--port", str(port)],
        env=subprocess_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert str(config) in result.stderr
    for text in named:
        assert text in result.stderr, result.stderr
    assert "Value error" not in result.stderr  # pydantic's prefix adds nothing for a person
    with pytest.raises(requests.ConnectionError):  # nothing was left listening
        requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2)


def test_every_runbook_an_alert_links_to_is_served_by_the_server(engine: Engine) -> None:
    from rmswatch.alerting.spec import HealthConfig, default_slos
    from rmswatch.config import runbook_url

    config = Config.model_validate({})
    health = HealthConfig()
    names = {getattr(health, rule).runbook for rule in HealthConfig.model_fields}
    names |= {slo.runbook for slo in default_slos() if slo.runbook}
    base, server = _serve(engine, {})
    try:
        for name in sorted(names):
            path = runbook_url(config, name).split("/", 3)[3]  # the path on this server
            response = requests.get(f"{base}/{path}", timeout=10)
            assert response.status_code == 200, name
            assert response.text.startswith("#"), name  # a markdown page, not an error page
        # an encoded "../" must not escape the runbook folder (it falls through to the app)
        escape = requests.get(f"{base}/runbooks/..%2Fserver.py", timeout=10)
        assert "import flask" not in escape.text
    finally:
        server.shutdown()
