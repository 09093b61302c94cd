"""Auth at the server's front door, over real HTTP on 127.0.0.1 (werkzeug thread + `requests`).

Each test here reproduces a bypass or a 500 that a probe found (issue 11): a trusted header that
let anyone in beside basic auth, prefix-matched auth-free routes, non-ASCII credentials, a GET on
the ingest path answered by the dashboard.
"""

from __future__ import annotations

import base64
import http.client
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
import requests
from pydantic import ValidationError
from sqlalchemy import Engine

from rmswatch.config import Config
from rmswatch.server import build_server
from tests.helpers import free_port

BASIC = {"basic": {"username": "oncall", "password_env": "PW"}}


@pytest.fixture
def serve(engine: Engine) -> Iterator[Any]:
    servers: list[Any] = []

    def start(auth: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> str:
        config = Config.model_validate({"server": {"auth": dict(auth)}})
        server = build_server(config, engine, start_scheduler=False, environ=environ or {})
        port = free_port()
        server.start_in_thread("127.0.0.1", port)
        servers.append(server)
        return f"http://127.0.0.1:{port}"

    yield start
    for server in servers:
        server.shutdown()


def _raw_get(base: str, path: str, headers: Mapping[str, str] | None = None) -> int:
    """GET `path` exactly as written (no client-side `..` normalisation, like curl --path-as-is)."""
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", path, headers=dict(headers or {}))
        return conn.getresponse().status
    finally:
        conn.close()


def test_basic_auth_with_a_trusted_header_but_no_trusted_proxies_is_refused() -> None:
    with pytest.raises(ValidationError, match="trusted_proxies"):
        Config.model_validate({"server": {"auth": {**BASIC, "trusted_header": "X-Forwarded-User"}}})


def test_a_trusted_proxies_entry_that_is_not_a_cidr_is_refused_naming_it() -> None:
    with pytest.raises(ValidationError, match="10.0.0.300/8"):
        Config.model_validate(
            {"server": {"auth": {"trusted_header": "X-User", "trusted_proxies": ["10.0.0.300/8"]}}}
        )


def test_the_trusted_header_alone_from_an_untrusted_address_needs_credentials(serve: Any) -> None:
    # the proxy is elsewhere (10.9.9.0/24): a request from 127.0.0.1 sending the header is not it
    base = serve(
        {**BASIC, "trusted_header": "X-Forwarded-User", "trusted_proxies": ["10.9.9.0/24"]},
        {"PW": "s3cret"},
    )
    forged = requests.get(f"{base}/postmortem", headers={"X-Forwarded-User": "mallory"}, timeout=10)
    assert forged.status_code == 401
    layout = requests.get(
        f"{base}/_dash-layout", headers={"X-Forwarded-User": "mallory"}, timeout=10
    )
    assert layout.status_code == 401
    assert requests.get(f"{base}/postmortem", auth=("oncall", "s3cret"), timeout=10).ok


def test_the_trusted_header_from_a_trusted_proxy_lets_the_request_in(serve: Any) -> None:
    base = serve(
        {**BASIC, "trusted_header": "X-Forwarded-User", "trusted_proxies": ["127.0.0.0/8"]},
        {"PW": "s3cret"},
    )
    proxied = requests.get(f"{base}/oncall", headers={"X-Forwarded-User": "ada"}, timeout=10)
    assert proxied.status_code == 200
    assert requests.get(f"{base}/oncall", timeout=10).status_code == 401


def test_a_trusted_header_alone_trusts_only_loopback_by_default() -> None:
    auth = Config.model_validate({"server": {"auth": {"trusted_header": "X-User"}}}).server.auth
    assert auth.trusted_proxies == ("127.0.0.0/8", "::1/128")


@pytest.mark.parametrize(
    "path", ["/healthzfoo", "/api/v1/ingestXYZ", "/healthz/../oncall", "/api/v1/ingest/../oncall"]
)
def test_auth_free_routes_match_exactly(serve: Any, path: str) -> None:
    base = serve(BASIC, {"PW": "s3cret"})
    assert _raw_get(base, path) == 401
    assert _raw_get(base, "/healthz") == 200


def test_get_on_the_ingest_path_is_405_not_the_dashboard(serve: Any) -> None:
    base = serve(BASIC, {"PW": "s3cret"})
    response = requests.get(f"{base}/api/v1/ingest", timeout=10)
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"
    assert "<html" not in response.text.lower()


def test_get_on_the_ingest_path_is_405_without_auth_configured_too(serve: Any) -> None:
    base = serve({})
    assert requests.get(f"{base}/api/v1/ingest", timeout=10).status_code == 405


def _basic(user: bytes, password: bytes) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(user + b":" + password).decode()}


def test_non_ascii_credentials_compare_as_utf8_bytes(serve: Any) -> None:
    base = serve({"basic": {"username": "é", "password_env": "PW"}}, {"PW": "pässwörd"})
    good = requests.get(
        f"{base}/oncall", headers=_basic("é".encode(), "pässwörd".encode()), timeout=10
    )
    assert good.status_code == 200
    wrong = requests.get(f"{base}/oncall", headers=_basic("é".encode(), b"password"), timeout=10)
    assert wrong.status_code == 401
    # requests encodes str credentials as Latin-1: not the configured UTF-8 bytes, so 401, not 500
    latin1 = requests.get(f"{base}/oncall", auth=("é", "pässwörd"), timeout=10)
    assert latin1.status_code == 401
    assert 'charset="UTF-8"' in latin1.headers["WWW-Authenticate"]
    garbage = requests.get(f"{base}/oncall", headers={"Authorization": "Basic %%%"}, timeout=10)
    assert garbage.status_code == 401


def test_a_non_ascii_user_against_an_ascii_config_is_401_not_500(serve: Any) -> None:
    base = serve(BASIC, {"PW": "s3cret"})
    response = requests.get(f"{base}/oncall", headers=_basic("é".encode(), b"s3cret"), timeout=10)
    assert response.status_code == 401


def test_serving_a_non_loopback_address_without_auth_is_refused_in_one_line(
    sqlite_url: str,
) -> None:
    import subprocess
    import sys

    from tests.helpers import subprocess_env

    port = free_port()
    result = subprocess.run(
        [sys.executable, "-m", "rmswatch", "serve", "--db", sqlite_url, "--host", "0.0.0.0",
         "--port", str(port), "--no-scheduler"],
        env=subprocess_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert "refusing to bind 0.0.0.0 without authentication" in result.stderr
    assert "--insecure" in result.stderr and "Traceback" not in result.stderr


def test_insecure_allows_it_with_a_warning_and_auth_or_loopback_need_no_flag(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from rmswatch.config import ConfigError
    from rmswatch.server import check_exposure

    bare = Config()
    with_auth = Config.model_validate({"server": {"auth": BASIC}})
    for host in ("127.0.0.1", "::1", "localhost", "127.3.4.5"):
        check_exposure(host, bare, insecure=False)
    check_exposure("0.0.0.0", with_auth, insecure=False)
    for host in ("0.0.0.0", "10.1.2.3", "::", "my-host.example"):
        with pytest.raises(ConfigError, match=f"refusing to bind {host}"):
            check_exposure(host, bare, insecure=False)
    check_exposure("0.0.0.0", bare, insecure=True)
    assert "WARNING: serving 0.0.0.0 without authentication" in capsys.readouterr().err
