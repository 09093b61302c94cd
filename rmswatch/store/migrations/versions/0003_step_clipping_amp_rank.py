"""Step fields of the training-loop round: pre-clip gradient norm, clipped, AMP skipped steps
and loss scale, rank/world_size, sentinel-only records (`full`), lr per group (`lrs`); per-layer
pre-clip gradient norm.

Existing rows get the values a record without these facts has: not clipped, not skipped,
rank 0 of 1, full, unknown pre-clip norm, loss scale and per-group lrs.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('steps', schema=None) as batch_op:
        batch_op.add_column(sa.Column('grad_norm_before_clip', sa.Float(), nullable=True))
        batch_op.add_column(
            sa.Column('clipped', sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(
            sa.Column('skipped', sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(sa.Column('loss_scale', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('rank', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(
            sa.Column('world_size', sa.Integer(), nullable=False, server_default='1')
        )
        batch_op.add_column(
            sa.Column('full', sa.Boolean(), nullable=False, server_default=sa.true())
        )
        batch_op.add_column(sa.Column('lrs', sa.JSON(), nullable=True))
    with op.batch_alter_table('layer_steps', schema=None) as batch_op:
        batch_op.add_column(sa.Column('grad_norm_before_clip', sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('layer_steps', schema=None) as batch_op:
        batch_op.drop_column('grad_norm_before_clip')
    with op.batch_alter_table('steps', schema=None) as batch_op:
        for name in (
            'lrs', 'full', 'world_size', 'rank', 'loss_scale', 'skipped', 'clipped',
            'grad_norm_before_clip',
        ):
            batch_op.drop_column(name)
