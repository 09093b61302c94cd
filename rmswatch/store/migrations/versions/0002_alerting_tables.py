"""Alerting tables: alerts, alert_events, silences, alert_groups, notifications.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table('alerts',
    sa.Column('id', _BIG_ID, autoincrement=True, nullable=False),
    sa.Column('fingerprint', sa.String(length=32), nullable=False),
    sa.Column('alertname', sa.String(length=256), nullable=False),
    sa.Column('job', sa.String(length=256), nullable=False),
    sa.Column('run_id', sa.String(length=128), nullable=False),
    sa.Column('severity', sa.String(length=16), nullable=False),
    sa.Column('labels', sa.JSON(), nullable=False),
    sa.Column('annotations', sa.JSON(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('value', sa.Float(), nullable=True),
    sa.Column('for_seconds', sa.Float(), nullable=False),
    sa.Column('active_since', sa.DateTime(timezone=True), nullable=True),
    sa.Column('starts_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('ends_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_evaluated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('acknowledged_by', sa.String(length=256), nullable=True),
    sa.Column('acknowledged_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('silenced_by', sa.JSON(), nullable=False),
    sa.Column('inhibited_by', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('fingerprint')
    )
    op.create_index('ix_alerts_alertname', 'alerts', ['alertname'])
    op.create_index('ix_alerts_job', 'alerts', ['job'])
    op.create_index('ix_alerts_run_id', 'alerts', ['run_id'])
    op.create_index('ix_alerts_state', 'alerts', ['state'])

    op.create_table('alert_events',
    sa.Column('id', _BIG_ID, autoincrement=True, nullable=False),
    sa.Column('fingerprint', sa.String(length=32), nullable=False),
    sa.Column('alertname', sa.String(length=256), nullable=False),
    sa.Column('job', sa.String(length=256), nullable=False),
    sa.Column('run_id', sa.String(length=128), nullable=False),
    sa.Column('severity', sa.String(length=16), nullable=False),
    sa.Column('time', sa.DateTime(timezone=True), nullable=False),
    sa.Column('from_state', sa.String(length=16), nullable=False),
    sa.Column('to_state', sa.String(length=16), nullable=False),
    sa.Column('value', sa.Float(), nullable=True),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_alert_events_fingerprint', 'alert_events', ['fingerprint'])
    op.create_index('ix_alert_events_job', 'alert_events', ['job'])
    op.create_index('ix_alert_events_run_id', 'alert_events', ['run_id'])
    op.create_index('ix_alert_events_time', 'alert_events', ['time'])

    op.create_table('silences',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('matchers', sa.JSON(), nullable=False),
    sa.Column('starts_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ends_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('author', sa.String(length=256), nullable=False),
    sa.Column('comment', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expired_by', sa.String(length=256), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_silences_ends_at', 'silences', ['ends_at'])

    op.create_table('alert_groups',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('receiver', sa.String(length=256), nullable=False),
    sa.Column('group_key', sa.String(length=1024), nullable=False),
    sa.Column('group_labels', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('next_flush_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_notified_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('notified_firing', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('receiver', 'group_key', name='uq_alert_groups')
    )

    op.create_table('notifications',
    sa.Column('id', _BIG_ID, autoincrement=True, nullable=False),
    sa.Column('receiver', sa.String(length=256), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('group_key', sa.String(length=1024), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('fingerprints', sa.JSON(), nullable=False),
    sa.Column('requests', sa.JSON(), nullable=False),
    sa.Column('requests_sent', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_notifications_pending', 'notifications', ['receiver', 'delivered_at'])


def downgrade() -> None:
    op.drop_index('ix_notifications_pending', table_name='notifications')
    op.drop_table('notifications')
    op.drop_table('alert_groups')
    op.drop_index('ix_silences_ends_at', table_name='silences')
    op.drop_table('silences')
    for name in ('time', 'run_id', 'job', 'fingerprint'):
        op.drop_index(f'ix_alert_events_{name}', table_name='alert_events')
    op.drop_table('alert_events')
    for name in ('state', 'run_id', 'job', 'alertname'):
        op.drop_index(f'ix_alerts_{name}', table_name='alerts')
    op.drop_table('alerts')
