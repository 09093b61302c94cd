"""Silences: mute notifications of alerts matching label matchers for a while.

`create_silence`, `expire_silence` and `list_silences` are what the app's UI and
`rmswatch silence add|list|expire` call. A silence mutes notifications only:
the alert's state (and its resolution) is still recorded in the store.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from rmswatch._validation import ArgumentError
from rmswatch.alerting.lifecycle import utc, utcnow
from rmswatch.alerting.routing_config import Matcher, matches_all, parse_matchers
from rmswatch.store.engine import write_session
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
    """Store a silence and return its id. Raises ArgumentError (a ValueError) naming the argument.

    `matchers`: strings like `job=~"resnet-.*"`, `Matcher`s, or `{label: value}` (equality).
    """
    try:
        parsed = parse_matchers(matchers if isinstance(matchers, Mapping) else list(matchers))
    except ValueError as exc:
        raise ArgumentError(f"matchers: {exc}") from exc
    if not parsed:
        raise ArgumentError("matchers: at least one matcher is required (e.g. job=resnet-retrain)")
    if all(m.matches({}) for m in parsed):
        # as Alertmanager: a silence whose matchers all match the empty label set mutes everything
        raise ArgumentError(
            "matchers: at least one matcher must not match an empty label "
            f"(got: {', '.join(str(m) for m in parsed)})"
        )
    if not author.strip():
        raise ArgumentError("author: required (who is silencing)")
    if not comment.strip():
        raise ArgumentError("comment: required (why; a ticket or incident link)")
    starts_at, ends_at = utc(starts_at), utc(ends_at)
    if ends_at <= starts_at:
        raise ArgumentError(f"ends_at ({ends_at.isoformat()}) must be after starts_at")
    with write_session(engine) as session:
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
    with write_session(engine) as session:
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
