"""Silences: mute notifications of alerts matching label matchers for a while.

`create_silence`, `expire_silence` and `list_silences` are what the app's UI calls;
`silence_command` is `rmswatch silence add|list|expire`. A silence mutes notifications only:
the alert's state (and its resolution) is still recorded in the store.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from rmswatch.alerting.lifecycle import utc, utcnow
from rmswatch.alerting.routing_config import Matcher, matches_all, parse_duration, parse_matchers
from rmswatch.store.models_alerting import SilenceRow


@dataclass(frozen=True, slots=True)
class Silence:
    id: int
    matchers: tuple[Matcher, ...]
    starts_at: datetime
    ends_at: datetime
    author: str
    comment: str
    created_at: datetime

    def state(self, now: datetime) -> str:
        """Alertmanager's words: pending (not started), active, expired."""
        if now < self.starts_at:
            return "pending"
        return "active" if now < self.ends_at else "expired"

    def mutes(self, labels: dict[str, str], now: datetime) -> bool:
        return self.state(now) == "active" and matches_all(self.matchers, labels)


def _from_row(row: SilenceRow) -> Silence:
    return Silence(
        id=row.id,
        matchers=tuple(Matcher(m["name"], m["op"], m["value"]) for m in row.matchers),
        starts_at=utc(row.starts_at),
        ends_at=utc(row.ends_at),
        author=row.author,
        comment=row.comment,
        created_at=utc(row.created_at),
    )


def create_silence(
    engine: Engine,
    matchers: Sequence[str | Matcher] | Mapping[str, str],
    starts_at: datetime,
    ends_at: datetime,
    author: str,
    comment: str,
    *,
    now: datetime | None = None,
) -> int:
    """Store a silence and return its id. Raises ValueError naming the bad argument.

    `matchers`: strings like `job=~"resnet-.*"`, `Matcher`s, or `{label: value}` (equality).
    """
    parsed = parse_matchers(matchers if isinstance(matchers, Mapping) else list(matchers))
    if not parsed:
        raise ValueError("matchers: at least one matcher is required (e.g. job=resnet-retrain)")
    if all(m.matches({}) for m in parsed):
        # as Alertmanager: a silence whose matchers all match the empty label set mutes everything
        raise ValueError(
            "matchers: at least one matcher must not match an empty label "
            f"(got: {', '.join(str(m) for m in parsed)})"
        )
    if not author.strip():
        raise ValueError("author: required (who is silencing)")
    if not comment.strip():
        raise ValueError("comment: required (why; a ticket or incident link)")
    starts_at, ends_at = utc(starts_at), utc(ends_at)
    if ends_at <= starts_at:
        raise ValueError(f"ends_at ({ends_at.isoformat()}) must be after starts_at")
    with Session(engine) as session, session.begin():
        row = SilenceRow(
            matchers=[m.as_dict() for m in parsed],
            starts_at=starts_at,
            ends_at=ends_at,
            author=author.strip(),
            comment=comment.strip(),
            created_at=utc(now or utcnow()),
        )
        session.add(row)
        session.flush()
        return int(row.id)


def expire_silence(
    engine: Engine, silence_id: int, *, by: str = "", now: datetime | None = None
) -> bool:
    """End a silence now; False when it does not exist or has already ended."""
    moment = utc(now or utcnow())
    with Session(engine) as session, session.begin():
        row = session.get(SilenceRow, silence_id)
        if row is None or utc(row.ends_at) <= moment:
            return False
        row.ends_at = max(moment, utc(row.starts_at))
        row.expired_by = by or None
        return True


def list_silences(
    engine: Engine, *, now: datetime | None = None, include_expired: bool = False
) -> list[Silence]:
    """Active and pending silences (and expired ones if asked), newest first."""
    moment = utc(now or utcnow())
    with Session(engine) as session:
        query = select(SilenceRow).order_by(SilenceRow.id.desc())
        if not include_expired:
            query = query.where(SilenceRow.ends_at > moment)
        return [_from_row(row) for row in session.scalars(query)]


def active_silences(session: Session, now: datetime) -> list[Silence]:
    rows = session.scalars(
        select(SilenceRow).where(SilenceRow.ends_at > now, SilenceRow.starts_at <= now)
    )
    return [_from_row(row) for row in rows]


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
    """`rmswatch silence add|list|expire`; prints what it did, returns the exit code."""
    from rmswatch.alerting.scheduler import open_store
    from rmswatch.store.existing import open_existing_store

    # listing only reads: a mistyped --db must not leave an empty store behind
    engine = open_existing_store(db_url) if action == "list" else open_store(db_url)
    moment = utc(now or utcnow())
    try:
        if action == "add":
            try:
                seconds = parse_duration(duration)
                new_id = create_silence(
                    engine,
                    list(matchers or []),
                    moment,
                    moment + timedelta(seconds=seconds),
                    author or "",
                    comment or "",
                    now=moment,
                )
            except ValueError as exc:
                print(f"rmswatch silence add: {exc}", file=sys.stderr)
                return 2
            print(f"silence {new_id} active until {(moment + timedelta(seconds=seconds))}")
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
        print(f"rmswatch silence: unknown action {action!r} (accepted: add, list, expire)")
        return 2
    finally:
        engine.dispose()
