"""attempts that may have landed, deferrals, held follow-ups, and refused events' sender and case

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 22:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import broker.store.tables

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Json = sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), "postgresql")
Blob = sa.LargeBinary().with_variant(sa.dialects.sqlite.BLOB(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('may_have_landed', sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column('deferrals', sa.Integer(), server_default=sa.text('0'), nullable=False))
    # Any attempt made before this revision may have reached its target: the next one asks first.
    op.execute("UPDATE deliveries SET may_have_landed = true WHERE attempts > 0 OR state = 'in_flight'")
    with op.batch_alter_table('failed_messages', schema=None) as batch_op:
        batch_op.add_column(sa.Column('source', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('case_ref', sa.String(length=100), nullable=True))
    op.create_table(
        'held_events',
        sa.Column('id', BigId, autoincrement=True, nullable=False),
        sa.Column('event_id', sa.String(length=36), nullable=False),
        sa.Column('source', sa.String(length=64), nullable=False),
        sa.Column('case_ref', sa.String(length=100), nullable=False),
        sa.Column('via', sa.String(length=10), nullable=False),
        sa.Column('actor', sa.String(length=100), nullable=False),
        sa.Column('idempotency_key', sa.String(length=200), nullable=True),
        sa.Column('payload', Json, nullable=False),
        sa.Column('raw_body', Blob, nullable=True),
        sa.Column('received_at', broker.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column('expires_at', broker.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_held_events')),
        sa.UniqueConstraint('event_id', name=op.f('uq_held_events_event_id')),
    )
    op.create_index('ix_held_events_source_case_ref', 'held_events', ['source', 'case_ref'], unique=False)
    op.create_index(op.f('ix_held_events_expires_at'), 'held_events', ['expires_at'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_held_events_expires_at'), table_name='held_events')
    op.drop_index('ix_held_events_source_case_ref', table_name='held_events')
    op.drop_table('held_events')
    with op.batch_alter_table('failed_messages', schema=None) as batch_op:
        batch_op.drop_column('case_ref')
        batch_op.drop_column('source')
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_column('deferrals')
        batch_op.drop_column('may_have_landed')
