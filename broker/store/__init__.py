"""The store, the system of record: every case, event, delivery, outcome, failure and audit step.

SQLAlchemy tables on SQLite (the embedded default) or PostgreSQL, migrated by Alembic (``broker db upgrade``). The
queues carry only pointers into it; anything the queues lose can be queued again from here.
"""
