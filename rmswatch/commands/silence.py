"""`rmswatch silence add|list|expire`: alert silences from the command line."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import datetime, timedelta

from rmswatch._validation import ArgumentError, parse_duration
from rmswatch.alerting.lifecycle import utc, utcnow
from rmswatch.alerting.silences import create_silence, expire_silence, list_silences
from rmswatch.store.engine import open_store
from rmswatch.store.existing import open_existing_store


def silence_command(
    db_url: str,
    action: str,
    matchers: Sequence[str] | None = None,
    duration: str = "1h",
    author: str | None = None,
    comment: str | None = None,
    silence_id: int | None = None,
    *,
    now: datetime | None = None,
) -> int:
    """Prints what it did and returns the exit code; a bad argument raises ArgumentError."""
    # listing only reads: a mistyped --db must not leave an empty store behind
    engine = open_existing_store(db_url) if action == "list" else open_store(db_url)
    moment = utc(now or utcnow())
    try:
        if action == "add":
            try:
                seconds = parse_duration(duration)
            except ValueError as exc:
                raise ArgumentError(f"--duration: {exc}") from exc
            until = moment + timedelta(seconds=seconds)
            new_id = create_silence(
                engine, list(matchers or []), moment, until, author or "", comment or "",
                now=moment,
            )  # fmt: skip
            print(f"silence {new_id} active until {until}")
            return 0
        if action == "list":
            silences = list_silences(engine, now=moment)
            if not silences:
                print("no active or pending silences")
            for s in silences:
                print(
                    f"{s.id}\t{s.state(moment)}\t{', '.join(str(m) for m in s.matchers)}\t"
                    f"until {s.ends_at.isoformat()}\t{s.author}: {s.comment}"
                )
            return 0
        if action == "expire":
            if silence_id is None or not expire_silence(engine, silence_id, now=moment):
                print(
                    f"rmswatch silence expire: no active silence with id {silence_id}",
                    file=sys.stderr,
                )
                return 1
            print(f"silence {silence_id} expired")
            return 0
        raise ArgumentError(f"unknown action {action!r} (accepted: add, list, expire)")
    finally:
        engine.dispose()
