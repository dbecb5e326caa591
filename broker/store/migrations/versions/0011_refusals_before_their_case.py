"""refused events waiting for their case: found by an index of only those rows

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None

UNLINKED_REFUSAL = "stage = 'intake' AND state = 'open' AND case_pk IS NULL"


def upgrade() -> None:
    with op.batch_alter_table('failed_messages', schema=None) as batch_op:
        batch_op.create_index('ix_failed_messages_before_case', ['source', 'case_ref'], unique=False,
                              postgresql_where=sa.text(UNLINKED_REFUSAL), sqlite_where=sa.text(UNLINKED_REFUSAL))


def downgrade() -> None:
    with op.batch_alter_table('failed_messages', schema=None) as batch_op:
        batch_op.drop_index('ix_failed_messages_before_case', postgresql_where=sa.text(UNLINKED_REFUSAL),
                            sqlite_where=sa.text(UNLINKED_REFUSAL))
