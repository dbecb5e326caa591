"""outbox rows name the target; the relay alone knows exchanges

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 23:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Every row so far was a delivery pointer, routed by its target's name.
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.alter_column('routing_key', new_column_name='target', existing_type=sa.String(length=200),
                              type_=sa.String(length=64), existing_nullable=False)
        batch_op.drop_column('exchange')


def downgrade() -> None:
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.add_column(sa.Column('exchange', sa.String(length=200), nullable=False,
                                      server_default='casebridge.deliver'))
        batch_op.alter_column('target', new_column_name='routing_key', existing_type=sa.String(length=64),
                              type_=sa.String(length=200), existing_nullable=False)
