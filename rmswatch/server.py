"""`rmswatch serve`: the Dash pages, the ingest API and the alert scheduler in one process.

`build_server` wires the parts around a given engine and config (tests use it directly);
`serve` reads the config, opens the store and runs the WSGI server until interrupted.
"""

from __future__ import annotations

import base64
import hmac
import ipaddress
import logging
import os
import signal
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import flask
import sqlalchemy as sa
from sqlalchemy import Engine
from werkzeug.serving import BaseWSGIServer, make_server

from rmswatch.config import Config, ConfigError, load_config

if TYPE_CHECKING:
    from rmswatch.collectors.ingest import IngestHealth

log = logging.getLogger(__name__)

# package data, so an installed wheel serves them too
RUNBOOK_DIR = Path(__file__).resolve().parent / "runbooks"
# the ingest API has its own bearer token; the browser never calls it. Matched exactly.
UNAUTHENTICATED_PATHS = frozenset({"/api/v1/ingest", "/healthz"})
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass
class Server:
    """A built server: the Flask app (Dash mounted on it) plus the scheduler it started."""

    flask: flask.Flask
    dash: Any
    engine: Engine
    config: Config
    scheduler: Any = None
    _http: BaseWSGIServer | None = field(default=None, repr=False)

    def bind(self, host: str, port: int) -> None:
        """Take the port now (PortInUseError names its holder), so "serving" is never printed
        for a socket that isn't ours."""
        from rmswatch._ports import ensure_free

        ensure_free(host, port)  # werkzeug's make_server would sys.exit(1) on a taken port
        self._http = make_server(host, port, self.flask, threaded=True)

    def serve_forever(self, host: str | None = None, port: int | None = None) -> None:
        if self._http is None:
            assert host is not None and port is not None, "bind() first or pass host and port"
            self.bind(host, port)
        assert self._http is not None
        self._http.serve_forever()

    def start_in_thread(self, host: str, port: int) -> threading.Thread:
        """Bind now and serve on a daemon thread (tests); `shutdown()` stops it."""
        self._http = make_server(host, port, self.flask, threaded=True)
        thread = threading.Thread(target=self._http.serve_forever, daemon=True)
        thread.start()
        return thread

    def shutdown(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        if self.scheduler is not None:
            self.scheduler.shutdown()
            self.scheduler = None


def build_server(
    config: Config,
    engine: Engine,
    *,
    start_scheduler: bool = True,
    environ: Mapping[str, str] | None = None,
) -> Server:
    """Flask + Dash pages + ingest blueprint + auth (+ the alert scheduler when asked).

    Secrets (the basic-auth password, the ingest token) are read from `environ`, by default
    the process environment. The pages use this `config` (SLOs, refresh, cost) too.
    """
    env = os.environ if environ is None else environ
    from rmswatch.app.context import AppContext
    from rmswatch.app.factory import create_app

    server = flask.Flask("rmswatch")
    _install_auth(server, config, env)
    ingest_health = _mount_ingest(server, engine, config, env)

    @server.get("/healthz")
    def healthz() -> tuple[str, int]:
        # a liveness probe that says "ok" while the store is gone would hide the outage
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        except sa.exc.SQLAlchemyError as exc:
            return f"store unreachable: {type(exc).__name__}\n", 503
        return "ok\n" + ingest_health.summary(), 200

    @server.get("/runbooks/<name>")
    def runbook(name: str) -> Any:
        # a NUL or other odd byte in the name is simply no runbook (pathlib raises on NUL)
        if not name.endswith(".md") or not name.replace("-", "").replace("_", "")[:-3].isalnum():
            flask.abort(404)
        path = (RUNBOOK_DIR / name).resolve()
        if path.parent != RUNBOOK_DIR.resolve() or not path.is_file():
            flask.abort(404)
        return flask.Response(path.read_text(encoding="utf-8"), mimetype="text/plain")

    @server.errorhandler(sa.exc.OperationalError)
    @server.errorhandler(sa.exc.InterfaceError)
    def store_down(exc: Exception) -> tuple[str, int, dict[str, str]]:
        # a page (the front door reads alerts) while the store is gone: say so, not "500"
        log.warning("store unreachable while serving %s: %s", flask.request.path, exc)
        page = (
            "<!doctype html><title>rmswatch: store unreachable</title>"
            "<h1>The run store is unreachable</h1>"
            f"<p>{type(exc).__name__}. The page will work again when the store is back; "
            "<a href='/healthz'>/healthz</a> says when.</p>"
        )
        return page, 503, {"Content-Type": "text/html; charset=utf-8", "Retry-After": "10"}

    dash_app = create_app(AppContext(engine=engine, config=config), server=server)
    scheduler = _start_scheduler(engine, config) if start_scheduler else None
    return Server(flask=server, dash=dash_app, engine=engine, config=config, scheduler=scheduler)


def _install_auth(server: flask.Flask, config: Config, environ: Mapping[str, str]) -> None:
    auth = config.server.auth
    if auth.basic is None and auth.trusted_header is None:
        return
    username = password = b""
    if auth.basic is not None:
        secret = environ.get(auth.basic.password_env, "")
        if not secret:
            raise ConfigError(
                "server.auth.basic",
                [
                    f"basic auth is configured but ${auth.basic.password_env} is empty; "
                    "set the password in that environment variable"
                ],
            )
        # bytes: hmac.compare_digest refuses non-ASCII str, and browsers send UTF-8
        username, password = auth.basic.username.encode(), secret.encode()
    proxies = tuple(ipaddress.ip_network(n, strict=False) for n in auth.trusted_proxies or ())

    @server.before_request
    def _require_auth() -> Any:
        # exact paths: "/healthzfoo" or "/healthz/../oncall" are pages like any other
        if flask.request.path in UNAUTHENTICATED_PATHS:
            return None
        if (
            auth.trusted_header is not None
            and flask.request.headers.get(auth.trusted_header)
            and _from_any(flask.request.remote_addr, proxies)
        ):
            return None
        if auth.basic is not None and _basic_ok(
            flask.request.headers.get("Authorization", ""), username, password
        ):
            return None
        if auth.basic is not None:
            return flask.Response(
                "authentication required\n",
                401,
                {"WWW-Authenticate": 'Basic realm="rmswatch", charset="UTF-8"'},
            )
        return flask.Response(f"missing {auth.trusted_header} header from a trusted proxy\n", 403)


def _from_any(address: str | None, networks: tuple[IPNetwork, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return False
    return any(ip in network for network in networks)


def _basic_ok(header: str, username: bytes, password: bytes) -> bool:
    if not header.startswith("Basic "):
        return False
    try:
        user, _, given = base64.b64decode(header[6:], validate=True).partition(b":")
    except ValueError:
        return False
    # both comparisons always run: the time taken doesn't say which half was wrong
    return hmac.compare_digest(user, username) & hmac.compare_digest(given, password)


def _mount_ingest(
    server: flask.Flask, engine: Engine, config: Config, environ: Mapping[str, str]
) -> IngestHealth:
    from rmswatch.collectors.ingest import IngestHealth, create_blueprint

    token = environ.get(config.server.ingest.token_env, "")
    health = IngestHealth()
    server.register_blueprint(
        create_blueprint(
            engine,
            token=token,
            max_batch_bytes=config.server.ingest.max_batch_bytes,
            health=health,
        )
    )
    return health


def is_loopback(host: str) -> bool:
    """True for an address only this machine reaches (127.0.0.0/8, ::1, "localhost")."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def check_exposure(host: str, config: Config, *, insecure: bool) -> None:
    """Refuse to serve the pages without auth on an address other machines can reach."""
    auth = config.server.auth
    if is_loopback(host) or auth.basic is not None or auth.trusted_header is not None:
        return
    if insecure:
        print(
            f"rmswatch serve: WARNING: serving {host} without authentication (--insecure); "
            "anyone who reaches this port sees every run and can silence alerts",
            file=sys.stderr,
            flush=True,
        )
        return
    raise ConfigError(
        "server.auth",
        [
            f"refusing to bind {host} without authentication: configure server.auth "
            "(basic or trusted_header, see docs/operations.md#security), bind 127.0.0.1, "
            "or pass --insecure"
        ],
    )


def _start_scheduler(engine: Engine, config: Config) -> Any:
    from rmswatch.alerting.scheduler import start_scheduler

    return start_scheduler(engine, config)


def _open_engine(url: str) -> Engine:
    from rmswatch.store.engine import make_engine, upgrade

    engine = make_engine(url)
    upgrade(engine)
    return engine


def _raise_keyboard_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def serve(
    db_url: str | None,
    config_path: str | None,
    host: str | None,
    port: int | None,
    scheduler: bool = True,
    insecure: bool = False,
) -> int:
    """`rmswatch serve`: run until interrupted. Binds 127.0.0.1:8050 unless told otherwise.

    A non-loopback address without `server.auth` is refused unless `insecure`: the pages show
    every run, postmortem and alert, and the on-call page can create silences.
    """
    config = load_config(config_path)
    url = db_url or config.store.url or "sqlite:///rmswatch.db"
    bind_host = host or config.server.host
    bind_port = port or config.server.port
    check_exposure(bind_host, config, insecure=insecure)
    from rmswatch._ports import ensure_free

    ensure_free(bind_host, bind_port)  # before the store is opened or the scheduler started
    engine = _open_engine(url)
    server = build_server(config, engine, start_scheduler=scheduler)
    try:
        server.bind(bind_host, bind_port)
    except BaseException:
        server.shutdown()
        engine.dispose()
        raise
    print(
        f"rmswatch serving http://{bind_host}:{bind_port}/ (store {engine.url!r})",
        file=sys.stderr,
        flush=True,
    )
    # SIGTERM (systemd, Kubernetes, the demo) stops like Ctrl-C: scheduler, then HTTP server
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        engine.dispose()
    return 0
