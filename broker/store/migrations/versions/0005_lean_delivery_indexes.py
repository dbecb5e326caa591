"""fewer index entries per delivery: the case's index is the composite's prefix; only retries wait for a time

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24 10:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_index('ix_deliveries_case_pk')
        batch_op.drop_index('ix_deliveries_next_attempt_at')
        batch_op.create_index('ix_deliveries_retry_due', ['next_attempt_at'], unique=False,
                              postgresql_where=sa.text("state = 'retrying'"),
                              sqlite_where=sa.text("state = 'retrying'"))


def downgrade() -> None:
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_index('ix_deliveries_retry_due', postgresql_where=sa.text("state = 'retrying'"),
                            sqlite_where=sa.text("state = 'retrying'"))
        batch_op.create_index('ix_deliveries_next_attempt_at', ['next_attempt_at'], unique=False)
        batch_op.create_index('ix_deliveries_case_pk', ['case_pk'], unique=False)
