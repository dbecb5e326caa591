"""The LOB systems' references for our cases: one per case and target, the newest one wins."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from broker.store.database import is_postgres
from broker.store.tables import ExternalRef

#: The longest reference kept (the column's width).
MAX_REFERENCE = 200


def remember_references(session: Session, latest: Mapping[tuple[str, str], str], now: datetime) -> None:
    """Insert or replace the reference for each ``(case_pk, target)``, in one statement; a reference already
    recorded as it is keeps its row and its time untouched."""
    if not latest:
        return
    keys = list(latest)
    references = [latest[key][:MAX_REFERENCE] for key in keys]
    if is_postgres(session):
        session.execute(_REMEMBER, {"case_pks": [case_pk for case_pk, _ in keys],
                                    "targets": [target for _, target in keys], "refs": references, "now": now})
        return
    upsert = sqlite_insert(ExternalRef)
    session.execute(
        upsert.values([{"case_pk": case_pk, "target": target, "reference": reference, "recorded_at": now}
                       for (case_pk, target), reference in zip(keys, references, strict=True)])
        .on_conflict_do_update(index_elements=["case_pk", "target"],
                               set_={"reference": upsert.excluded.reference, "recorded_at": now},
                               where=ExternalRef.reference != upsert.excluded.reference)
    )


_REMEMBER = text(
    "INSERT INTO external_refs (case_pk, target, reference, recorded_at) "
    "SELECT v.case_pk, v.target, v.ref, :now "
    "FROM unnest(CAST(:case_pks AS text[]), CAST(:targets AS text[]), CAST(:refs AS text[])) "
    "AS v(case_pk, target, ref) "
    "ON CONFLICT (case_pk, target) DO UPDATE SET reference = excluded.reference, recorded_at = excluded.recorded_at "
    "WHERE external_refs.reference IS DISTINCT FROM excluded.reference"
)
