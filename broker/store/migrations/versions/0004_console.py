"""support console: accounts, sessions, edits, bulk replays, schedule runs; failure causes and list indexes

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 19:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy import Text
from sqlalchemy.dialects import postgresql

import broker.store.tables
from broker.failures.causes import normalise_error

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

_json = sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), 'postgresql')
_id = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
_when = broker.store.tables.UtcDateTime(timezone=True)


def upgrade() -> None:
    op.create_table('users',
    sa.Column('id', _id, autoincrement=True, nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('role', sa.String(length=20), nullable=False),
    sa.Column('password_hash', sa.String(length=200), nullable=False),
    sa.Column('created_at', _when, nullable=False),
    sa.Column('disabled_at', _when, nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_users')),
    sa.UniqueConstraint('name', name=op.f('uq_users_name'))
    )
    op.create_table('console_sessions',
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('user_id', _id, nullable=False),
    sa.Column('csrf_token', sa.String(length=64), nullable=False),
    sa.Column('created_at', _when, nullable=False),
    sa.Column('expires_at', _when, nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_console_sessions_user_id_users')),
    sa.PrimaryKeyConstraint('token_hash', name=op.f('pk_console_sessions'))
    )
    op.create_index(op.f('ix_console_sessions_user_id'), 'console_sessions', ['user_id'], unique=False)
    op.create_table('sign_in_failures',
    sa.Column('id', _id, autoincrement=True, nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('address', sa.String(length=64), nullable=False),
    sa.Column('at', _when, nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sign_in_failures'))
    )
    op.create_index('ix_sign_in_failures_name_at', 'sign_in_failures', ['name', 'at'], unique=False)
    op.create_index('ix_sign_in_failures_address_at', 'sign_in_failures', ['address', 'at'], unique=False)
    op.create_table('message_edits',
    sa.Column('id', _id, autoincrement=True, nullable=False),
    sa.Column('failed_id', _id, nullable=False),
    sa.Column('edited_by', sa.String(length=100), nullable=False),
    sa.Column('at', _when, nullable=False),
    sa.Column('original', _json, nullable=False),
    sa.Column('edited', _json, nullable=False),
    sa.Column('diff', _json, nullable=False),
    sa.ForeignKeyConstraint(['failed_id'], ['failed_messages.id'], name=op.f('fk_message_edits_failed_id_failed_messages')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_message_edits'))
    )
    op.create_index(op.f('ix_message_edits_failed_id'), 'message_edits', ['failed_id'], unique=False)
    op.create_table('replay_jobs',
    sa.Column('id', _id, autoincrement=True, nullable=False),
    sa.Column('created_by', sa.String(length=100), nullable=False),
    sa.Column('created_at', _when, nullable=False),
    sa.Column('description', sa.String(length=500), nullable=False),
    sa.Column('state', sa.String(length=20), nullable=False),
    sa.Column('total', sa.Integer(), nullable=False),
    sa.Column('done', sa.Integer(), nullable=False),
    sa.Column('refused', sa.Integer(), nullable=False),
    sa.Column('batch_size', sa.Integer(), nullable=False),
    sa.Column('pause_seconds', sa.Float(), nullable=False),
    sa.Column('targets', _json, nullable=False),
    sa.Column('finished_at', _when, nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_replay_jobs'))
    )
    op.create_table('replay_job_items',
    sa.Column('job_id', _id, nullable=False),
    sa.Column('failed_id', _id, nullable=False),
    sa.Column('delivery_id', _id, nullable=True),
    sa.Column('state', sa.String(length=20), nullable=False),
    sa.Column('note', sa.String(length=500), nullable=True),
    sa.ForeignKeyConstraint(['failed_id'], ['failed_messages.id'], name=op.f('fk_replay_job_items_failed_id_failed_messages')),
    sa.ForeignKeyConstraint(['job_id'], ['replay_jobs.id'], name=op.f('fk_replay_job_items_job_id_replay_jobs')),
    sa.PrimaryKeyConstraint('job_id', 'failed_id', name=op.f('pk_replay_job_items'))
    )
    op.create_index('ix_replay_job_items_job_state', 'replay_job_items', ['job_id', 'state'], unique=False)
    with op.batch_alter_table('failed_messages', schema=None) as batch_op:
        batch_op.add_column(sa.Column('cause', sa.String(length=200), nullable=False, server_default=''))
    failed = sa.table('failed_messages', sa.column('id', sa.Integer()), sa.column('error_text', sa.Text()),
                      sa.column('cause', sa.String()))
    connection = op.get_bind()
    for row in connection.execute(sa.select(failed.c.id, failed.c.error_text)).all():
        connection.execute(failed.update().where(failed.c.id == row.id)
                           .values(cause=normalise_error(row.error_text or '')))
    with op.batch_alter_table('failed_messages', schema=None) as batch_op:
        batch_op.alter_column('cause', server_default=None)
        batch_op.create_index('ix_failed_messages_state_last_failed_at', ['state', 'last_failed_at', 'id'], unique=False)
        batch_op.create_index('ix_failed_messages_cause', ['state', 'target', 'error_class', 'reason', 'cause', 'first_failed_at', 'last_failed_at'],
                              unique=False)
    with op.batch_alter_table('cases', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_cases_case_id'), ['case_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('cases', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_cases_case_id'))
    with op.batch_alter_table('failed_messages', schema=None) as batch_op:
        batch_op.drop_index('ix_failed_messages_cause')
        batch_op.drop_index('ix_failed_messages_state_last_failed_at')
        batch_op.drop_column('cause')
    op.drop_index('ix_replay_job_items_job_state', table_name='replay_job_items')
    op.drop_table('replay_job_items')
    op.drop_table('replay_jobs')
    op.drop_index(op.f('ix_message_edits_failed_id'), table_name='message_edits')
    op.drop_table('message_edits')
    op.drop_index('ix_sign_in_failures_address_at', table_name='sign_in_failures')
    op.drop_index('ix_sign_in_failures_name_at', table_name='sign_in_failures')
    op.drop_table('sign_in_failures')
    op.drop_index(op.f('ix_console_sessions_user_id'), table_name='console_sessions')
    op.drop_table('console_sessions')
    op.drop_table('users')
