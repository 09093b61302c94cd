"""`rmswatch.watch()`: builds the sinks a user asked for and attaches a Monitor.

This is the one place that knows both the hooks and the collectors; the hooks stay free of I/O.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from rmswatch._limits import LimitError, check_int, check_labels, check_text
from rmswatch.trainer_hooks.adapters import adapter_for
from rmswatch.trainer_hooks.monitor import Monitor
from rmswatch.trainer_hooks.records import RunStatus, Telemetry
from rmswatch.trainer_hooks.screen import check_job, check_run_id
from rmswatch.trainer_hooks.sinks import Sink

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    import torch
    from prometheus_client import CollectorRegistry


def watch(
    optimizer: torch.optim.Optimizer,
    model: torch.nn.Module | None = None,
    job: str = "default",
    run_id: str | None = None,
    labels: Mapping[str, str] | None = None,
    store: str | None = None,
    prometheus_port: int | None = None,
    every: int | None = None,
    *,
    overhead: float = 0.03,
    prometheus_host: str = "127.0.0.1",
    prometheus_options: Mapping[str, Any] | None = None,
    registry: CollectorRegistry | None = None,
    sinks: Iterable[Sink] = (),
    flush_interval: float = 1.0,
    system_metrics: bool = True,
    token: str | None = None,
    **monitor_options: Any,
) -> Monitor:
    """Attach telemetry hooks to `optimizer` and start delivering records.

    `store` is a SQLAlchemy URL (`sqlite:///rmswatch.db`, `postgresql+psycopg://...`) or the
    rmswatch server's `http(s)://` URL (then `token`, or `$RMSWATCH_TOKEN`, authenticates).
    `prometheus_port` starts the in-process `/metrics` exporter on `prometheus_host`;
    `prometheus_options` go to `PrometheusSink` (cardinality guard: `layer_depth`, `max_layers`,
    `layer_distributions`; see docs/metrics.md).
    `every=None` (the default) is budget mode: a sentinel record every step (loss, global
    gradient norm, finiteness), full telemetry spaced so that it costs at most `overhead` of
    the bare step time, and a full record at any step the sentinel finds anomalous.
    `every=N` is a fixed cadence (steps 1, 1+N, ...; `every=1`: full telemetry every step).
    Remaining keyword arguments go to `Monitor` (see its docstring; docs/hooks.md, "Modes").
    After `rmswatch.load_checkpoint(path, model, optimizer)`, `start_step` defaults to the
    loaded checkpoint's step, so the resumed run continues its step axis.
    """
    from rmswatch.checkpoint import pending_resume_step, register_monitor

    # Refuse an optimizer we can't read, or names no store accepts, before anything binds a
    # port or opens a store.
    adapter_for(optimizer)
    check_job(job)
    if run_id is not None:
        check_run_id(run_id)
    labels = check_labels("labels", labels)
    if prometheus_port is not None:
        check_int("prometheus_port", prometheus_port, 0, 65535)
        check_text("prometheus_host", prometheus_host, 253)
    built: list[Sink] = []
    try:
        if store is not None:
            built.append(_store_sink(store, flush_interval, token))
        if prometheus_port is not None:
            built.append(
                _prometheus_sink(
                    prometheus_port, prometheus_host, registry, dict(prometheus_options or {})
                )
            )
        all_sinks = [*sinks, *built]
        samplers: Sequence[Callable[[], Telemetry | None]] = ()
        if system_metrics and all_sinks:
            from rmswatch.collectors.system import SystemSampler

            samplers = (SystemSampler().sample,)
        if monitor_options.get("start_step") is None:
            monitor_options["start_step"] = pending_resume_step(optimizer)
        monitor = Monitor(
            optimizer,
            model=model,
            job=job,
            run_id=run_id,
            labels=labels,
            every=every,
            overhead=overhead,
            sinks=all_sinks,
            samplers=samplers,
            **monitor_options,
        )
    except BaseException:
        _discard(built)  # a bad argument must not leave an exporter listening
        raise
    # checkpoints of this optimizer (also one loaded before watch()) are recorded here
    register_monitor(optimizer, monitor)
    return monitor


def _discard(sinks: Iterable[Sink]) -> None:
    for sink in sinks:
        try:
            sink.close(RunStatus(time.time(), "failed", "watch() failed"))
        except Exception:  # noqa: BLE001 - best-effort cleanup on an error path
            log.debug("closing %r after a failed watch() raised", sink, exc_info=True)


def _prometheus_sink(
    port: int, host: str, registry: CollectorRegistry | None, options: dict[str, Any]
) -> Sink:
    from rmswatch.collectors.prometheus import PrometheusSink

    try:
        return PrometheusSink(port=port, host=host, registry=registry, **options)
    except OSError as exc:
        # the bare errno says neither which address nor which argument
        reason = exc.strerror or str(exc)
        if isinstance(exc, socket.gaierror):
            reason = f"prometheus_host={host!r} does not resolve ({reason})"
        raise OSError(
            exc.errno,
            f"prometheus_port={port}: cannot listen on {host}:{port}: {reason}; "
            "pick another port, or prometheus_port=None for no exporter",
        ) from exc


STORE_URL_HELP = (
    "expected sqlite:///relative/file.db or sqlite:////absolute/file.db, "
    "postgresql+psycopg://user@host:5432/db, or the rmswatch server's http(s)://host:8050 URL"
)


def _store_sink(store: str, flush_interval: float, token: str | None) -> Sink:
    if not isinstance(store, str) or not store:
        raise LimitError("store", STORE_URL_HELP, store)
    if store.startswith(("http://", "https://")):
        from rmswatch.collectors.http_shipper import HttpShipper

        return HttpShipper(
            store, token=token or os.environ.get("RMSWATCH_TOKEN"), flush_interval=flush_interval
        )
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        backend = make_url(store).get_backend_name()
    except ArgumentError:
        raise LimitError("store", f"not a store URL; {STORE_URL_HELP}", store) from None
    if backend not in ("sqlite", "postgresql"):
        raise LimitError("store", f"{backend!r} is not a supported store; {STORE_URL_HELP}", store)
    from rmswatch.collectors.store_writer import StoreWriter

    return StoreWriter(store, flush_interval=flush_interval)
