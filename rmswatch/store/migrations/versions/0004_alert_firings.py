"""Alert history per firing: alert_firings (run, start, end, peak value of each firing).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table('alert_firings',
    sa.Column('id', _BIG_ID, autoincrement=True, nullable=False),
    sa.Column('fingerprint', sa.String(length=32), nullable=False),
    sa.Column('alertname', sa.String(length=256), nullable=False),
    sa.Column('job', sa.String(length=256), nullable=False),
    sa.Column('run_id', sa.String(length=128), nullable=False),
    sa.Column('severity', sa.String(length=16), nullable=False),
    sa.Column('labels', sa.JSON(), nullable=False),
    sa.Column('annotations', sa.JSON(), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('peak_value', sa.Float(), nullable=True),
    sa.Column('last_value', sa.Float(), nullable=True),
    sa.Column('notified_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_alert_firings_fingerprint', 'alert_firings', ['fingerprint'])
    op.create_index('ix_alert_firings_job', 'alert_firings', ['job'])
    op.create_index('ix_alert_firings_run_id', 'alert_firings', ['run_id'])
    op.create_index('ix_alert_firings_started_at', 'alert_firings', ['started_at'])
    op.create_index('ix_alert_firings_ended_at', 'alert_firings', ['ended_at'])
    # firings that happened before this revision: one per resolved/firing alert, as far as the
    # alert row still knows it (earlier episodes were overwritten and are not recoverable)
    op.execute(
        "INSERT INTO alert_firings (fingerprint, alertname, job, run_id, severity, labels, "
        "annotations, started_at, ended_at, peak_value, last_value, notified_at) "
        "SELECT fingerprint, alertname, job, run_id, severity, labels, annotations, starts_at, "
        "ends_at, value, value, starts_at FROM alerts WHERE starts_at IS NOT NULL "
        "AND state IN ('firing', 'resolved')"
    )


def downgrade() -> None:
    op.drop_table('alert_firings')
