"""each schedule's firing claimed by one scheduler

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 00:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import broker.store.tables

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'schedule_firings',
        sa.Column('schedule', sa.String(length=64), nullable=False),
        sa.Column('due_at', broker.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column('claimed_by', sa.String(length=100), nullable=False),
        sa.Column('claimed_at', broker.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('schedule', 'due_at', name=op.f('pk_schedule_firings')),
    )


def downgrade() -> None:
    op.drop_table('schedule_firings')
