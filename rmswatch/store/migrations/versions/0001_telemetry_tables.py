"""Telemetry tables: runs, steps, layer_steps, histograms, validations, checkpoints,
system_samples, sli_samples.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('runs',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('run_id', sa.String(length=128), nullable=False),
    sa.Column('job', sa.String(length=256), nullable=False),
    sa.Column('labels', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(length=32), nullable=False),
    sa.Column('status_detail', sa.Text(), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_step', sa.BigInteger(), nullable=True),
    sa.Column('last_step_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('host', sa.String(length=256), nullable=False),
    sa.Column('pid', sa.Integer(), nullable=False),
    sa.Column('rank', sa.Integer(), nullable=False),
    sa.Column('world_size', sa.Integer(), nullable=False),
    sa.Column('optimizer', sa.String(length=128), nullable=False),
    sa.Column('hyperparameters', sa.JSON(), nullable=False),
    sa.Column('layers', sa.JSON(), nullable=False),
    sa.Column('hist_edges', sa.JSON(), nullable=False),
    sa.Column('every', sa.Integer(), nullable=False),
    sa.Column('resumed_from_step', sa.BigInteger(), nullable=True),
    sa.Column('gpu_seconds', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('run_id')
    )
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_runs_job'), ['job'], unique=False)
        batch_op.create_index(batch_op.f('ix_runs_status'), ['status'], unique=False)

    op.create_table('sli_samples',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('job', sa.String(length=256), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('time', sa.DateTime(timezone=True), nullable=False),
    sa.Column('value', sa.Float(), nullable=False),
    sa.Column('labels', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('job', 'name', 'time', name='uq_sli_samples')
    )
    with op.batch_alter_table('sli_samples', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_sli_samples_job'), ['job'], unique=False)

    op.create_table('checkpoints',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('run_pk', sa.Integer(), nullable=False),
    sa.Column('step', sa.BigInteger(), nullable=False),
    sa.Column('time', sa.DateTime(timezone=True), nullable=False),
    sa.Column('action', sa.String(length=16), nullable=False),
    sa.Column('ok', sa.Boolean(), nullable=False),
    sa.Column('seconds', sa.Float(), nullable=True),
    sa.Column('size_bytes', sa.BigInteger(), nullable=True),
    sa.Column('path', sa.Text(), nullable=False),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['run_pk'], ['runs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('run_pk', 'step', 'action', 'time', name='uq_checkpoints')
    )
    with op.batch_alter_table('checkpoints', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_checkpoints_run_pk'), ['run_pk'], unique=False)

    op.create_table('histograms',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('run_pk', sa.Integer(), nullable=False),
    sa.Column('step', sa.BigInteger(), nullable=False),
    sa.Column('time', sa.DateTime(timezone=True), nullable=False),
    sa.Column('layer', sa.String(length=512), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('counts', sa.JSON(), nullable=False),
    sa.Column('zeros', sa.BigInteger(), nullable=False),
    sa.Column('nonfinite', sa.BigInteger(), nullable=False),
    sa.Column('exact', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['run_pk'], ['runs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('run_pk', 'step', 'layer', 'kind', name='uq_histograms_run_step_layer')
    )
    with op.batch_alter_table('histograms', schema=None) as batch_op:
        batch_op.create_index('ix_histograms_run_layer_step', ['run_pk', 'layer', 'step'], unique=False)
        batch_op.create_index(batch_op.f('ix_histograms_time'), ['time'], unique=False)

    op.create_table('layer_steps',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('run_pk', sa.Integer(), nullable=False),
    sa.Column('step', sa.BigInteger(), nullable=False),
    sa.Column('time', sa.DateTime(timezone=True), nullable=False),
    sa.Column('layer', sa.String(length=512), nullable=False),
    sa.Column('grad_norm', sa.Float(), nullable=True),
    sa.Column('param_norm', sa.Float(), nullable=True),
    sa.Column('update_norm', sa.Float(), nullable=True),
    sa.Column('update_ratio', sa.Float(), nullable=True),
    sa.Column('nonfinite_grad', sa.BigInteger(), nullable=False),
    sa.Column('nonfinite_param', sa.BigInteger(), nullable=False),
    sa.Column('nonfinite_state', sa.BigInteger(), nullable=False),
    sa.Column('eff_lr_mean', sa.Float(), nullable=True),
    sa.Column('eff_lr_min', sa.Float(), nullable=True),
    sa.Column('eff_lr_p50', sa.Float(), nullable=True),
    sa.Column('eff_lr_p95', sa.Float(), nullable=True),
    sa.Column('eff_lr_max', sa.Float(), nullable=True),
    sa.Column('has_grad', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['run_pk'], ['runs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('run_pk', 'step', 'layer', name='uq_layer_steps_run_step_layer')
    )
    with op.batch_alter_table('layer_steps', schema=None) as batch_op:
        batch_op.create_index('ix_layer_steps_run_layer_step', ['run_pk', 'layer', 'step'], unique=False)
        batch_op.create_index(batch_op.f('ix_layer_steps_time'), ['time'], unique=False)

    op.create_table('steps',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('run_pk', sa.Integer(), nullable=False),
    sa.Column('step', sa.BigInteger(), nullable=False),
    sa.Column('time', sa.DateTime(timezone=True), nullable=False),
    sa.Column('loss', sa.Float(), nullable=True),
    sa.Column('grad_norm', sa.Float(), nullable=True),
    sa.Column('param_norm', sa.Float(), nullable=True),
    sa.Column('update_norm', sa.Float(), nullable=True),
    sa.Column('update_ratio', sa.Float(), nullable=True),
    sa.Column('lr', sa.Float(), nullable=True),
    sa.Column('step_seconds', sa.Float(), nullable=True),
    sa.Column('nonfinite_grad', sa.BigInteger(), nullable=False),
    sa.Column('nonfinite_param', sa.BigInteger(), nullable=False),
    sa.Column('nonfinite_state', sa.BigInteger(), nullable=False),
    sa.Column('nonfinite_loss', sa.BigInteger(), nullable=False),
    sa.Column('eff_lr_mean', sa.Float(), nullable=True),
    sa.Column('eff_lr_min', sa.Float(), nullable=True),
    sa.Column('eff_lr_p50', sa.Float(), nullable=True),
    sa.Column('eff_lr_p95', sa.Float(), nullable=True),
    sa.Column('eff_lr_max', sa.Float(), nullable=True),
    sa.Column('dropped_total', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['run_pk'], ['runs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('run_pk', 'step', name='uq_steps_run_step')
    )
    with op.batch_alter_table('steps', schema=None) as batch_op:
        batch_op.create_index('ix_steps_run_time', ['run_pk', 'time'], unique=False)

    op.create_table('system_samples',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('run_pk', sa.Integer(), nullable=False),
    sa.Column('time', sa.DateTime(timezone=True), nullable=False),
    sa.Column('cpu_percent', sa.Float(), nullable=True),
    sa.Column('rss_bytes', sa.BigInteger(), nullable=True),
    sa.Column('gpu_util_percent', sa.Float(), nullable=True),
    sa.Column('gpu_memory_bytes', sa.BigInteger(), nullable=True),
    sa.Column('gpu_count', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['run_pk'], ['runs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('run_pk', 'time', name='uq_system_samples_run_time')
    )
    op.create_table('validations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('run_pk', sa.Integer(), nullable=False),
    sa.Column('step', sa.BigInteger(), nullable=False),
    sa.Column('time', sa.DateTime(timezone=True), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('value', sa.Float(), nullable=True),
    sa.ForeignKeyConstraint(['run_pk'], ['runs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('run_pk', 'step', 'name', name='uq_validations')
    )
    with op.batch_alter_table('validations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_validations_run_pk'), ['run_pk'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('validations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_validations_run_pk'))

    op.drop_table('validations')
    op.drop_table('system_samples')
    with op.batch_alter_table('steps', schema=None) as batch_op:
        batch_op.drop_index('ix_steps_run_time')

    op.drop_table('steps')
    with op.batch_alter_table('layer_steps', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_layer_steps_time'))
        batch_op.drop_index('ix_layer_steps_run_layer_step')

    op.drop_table('layer_steps')
    with op.batch_alter_table('histograms', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_histograms_time'))
        batch_op.drop_index('ix_histograms_run_layer_step')

    op.drop_table('histograms')
    with op.batch_alter_table('checkpoints', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_checkpoints_run_pk'))

    op.drop_table('checkpoints')
    with op.batch_alter_table('sli_samples', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_sli_samples_job'))

    op.drop_table('sli_samples')
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_runs_status'))
        batch_op.drop_index(batch_op.f('ix_runs_job'))

    op.drop_table('runs')
