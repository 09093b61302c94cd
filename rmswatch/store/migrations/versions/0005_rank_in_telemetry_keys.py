"""Rank in the telemetry keys, and the rank_checks table (cross-rank optimizer-state checks).

Adds `rank` (0 for rows already there) to steps, layer_steps and histograms and makes it part
of their uniqueness keys, so that rank 1's step 10 no longer collides with rank 0's and is
dropped by ON CONFLICT DO NOTHING. A column another revision already added is kept as it is.
`rank_checks` holds the desync checks a distributed run's rank 0 reports.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

# table -> (old unique constraint, new one, the new key's columns)
_KEYS = {
    'steps': (
        'uq_steps_run_step', 'uq_steps_run_rank_step', ['run_pk', 'rank', 'step'],
    ),
    'layer_steps': (
        'uq_layer_steps_run_step_layer', 'uq_layer_steps_run_rank_step_layer',
        ['run_pk', 'rank', 'step', 'layer'],
    ),
    'histograms': (
        'uq_histograms_run_step_layer', 'uq_histograms_run_rank_step_layer',
        ['run_pk', 'rank', 'step', 'layer', 'kind'],
    ),
}


def upgrade() -> None:
    op.create_table(
        "rank_checks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_pk", sa.Integer(), nullable=False),
        sa.Column("step", sa.BigInteger(), nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("ranks", sa.JSON(), nullable=False),
        sa.Column("layers", sa.JSON(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("world_size", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["run_pk"], ["runs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("run_pk", "step", name="uq_rank_checks_run_step"),
    )
    with op.batch_alter_table("rank_checks", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_rank_checks_run_pk"), ["run_pk"], unique=False)
    inspector = sa.inspect(op.get_bind())
    for table, (old, new, columns) in _KEYS.items():
        have = {c['name'] for c in inspector.get_columns(table)}
        with op.batch_alter_table(table, schema=None) as batch_op:
            if 'rank' not in have:
                batch_op.add_column(
                    sa.Column('rank', sa.Integer(), nullable=False, server_default='0')
                )
            batch_op.drop_constraint(old, type_='unique')
            batch_op.create_unique_constraint(new, columns)


def downgrade() -> None:
    op.drop_table("rank_checks")
    # Rows of ranks other than 0 can't be kept under the old keys.
    for table, (old, new, columns) in _KEYS.items():
        op.execute(sa.text(f'DELETE FROM {table} WHERE rank <> 0'))
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_constraint(new, type_='unique')
            batch_op.create_unique_constraint(old, [c for c in columns if c != 'rank'])
            batch_op.drop_column('rank')
