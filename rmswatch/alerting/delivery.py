"""Notification delivery off the evaluation tick: one worker thread per receiver.

The tick only writes the outbox and calls `wake()`; each receiver's thread sends that receiver's
due notifications (`outbox.deliver_due`, oldest first) with the receiver's own `timeout_seconds`.
A receiver that hangs holds up only its own thread: neither the tick nor the other receivers
wait for it. Only the alerting leader sends (`is_leader`, read without touching the store).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from rmswatch.alerting.outbox import deliver_due
from rmswatch.alerting.receivers import Transport
from rmswatch.alerting.routing_config import OutboxConfig, ReceiverConfig
from rmswatch.store.models_alerting import NotificationRow

log = logging.getLogger(__name__)


class DeliveryWorker:
    """Per-receiver sender threads; `wake()` after writing notifications, `stop()` at shutdown.

    Each thread also polls every `policy.poll_seconds`, which is when retries after a backoff
    go out. `delivered` counts notifications accepted by any receiver.
    """

    def __init__(
        self,
        engine: Engine,
        receivers: Sequence[ReceiverConfig],
        policy: OutboxConfig,
        *,
        clock: Callable[[], datetime],
        transport: Transport,
        environ: Mapping[str, str] | None,
        is_leader: Callable[[], bool],
    ) -> None:
        self._engine = engine
        self._receivers = tuple(receivers)
        self._policy = policy
        self._clock = clock
        self._transport = transport
        self._environ = environ
        self._is_leader = is_leader
        self._stop = threading.Event()
        self._wake = {r.name: threading.Event() for r in self._receivers}
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._warned: set[str] = set()
        self.delivered = 0
        self.last_error = ""

    def start(self) -> DeliveryWorker:
        for receiver in self._receivers:
            thread = threading.Thread(
                target=self._loop,
                args=(receiver,),
                name=f"rmswatch-deliver-{receiver.name}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)
        return self

    def wake(self) -> None:
        """New notifications may be due: every receiver looks now instead of at its next poll."""
        for event in self._wake.values():
            event.set()

    def warn_orphans(self) -> list[str]:
        """Receivers with waiting notifications that are no longer in the config: they wait
        (never dropped); each is logged once per process. Returns their names."""
        with Session(self._engine) as session:
            pending = set(
                session.scalars(
                    select(NotificationRow.receiver)
                    .where(NotificationRow.delivered_at.is_(None))
                    .distinct()
                )
            )
        orphans = sorted(pending - set(self._wake))
        for name in orphans:
            if name not in self._warned:
                self._warned.add(name)
                log.warning(
                    "notifications for receiver %r wait: it is no longer in the config", name
                )
        return orphans

    def stop(self, timeout: float | None = None) -> None:
        """Stop the threads; one in the middle of a request finishes it (bounded by the
        receiver's timeout) unless `timeout` runs out first."""
        self._stop.set()
        self.wake()
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()

    def _loop(self, receiver: ReceiverConfig) -> None:
        wake = self._wake[receiver.name]
        while not self._stop.is_set():
            wake.wait(self._policy.poll_seconds)
            wake.clear()
            if self._stop.is_set():
                return
            if not self._is_leader():
                continue
            try:
                report = deliver_due(
                    self._engine,
                    [receiver],
                    self._policy,
                    clock=self._clock,
                    transport=self._transport,
                    environ=self._environ,
                    only=(receiver.name,),
                )
            except Exception as exc:  # noqa: BLE001 - the store may be down; retry next poll
                with self._lock:
                    self.last_error = f"{receiver.name}: {type(exc).__name__}: {exc}"
                log.exception("delivery to receiver %r failed", receiver.name)
                continue
            with self._lock:
                self.delivered += report.delivered
