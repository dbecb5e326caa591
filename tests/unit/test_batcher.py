"""The intake batcher answers every submission it takes, once its transaction has committed, even one that
arrives as the broker stops; once stopped it refuses rather than leave a request waiting for ever."""

from __future__ import annotations

import threading
from concurrent.futures import Future
from pathlib import Path

import pytest
from sqlalchemy import func, select
from support.envelopes import case_created
from support.harness import write_mappings

from broker.intake.batcher import IntakeBatcher
from broker.intake.transaction import Outcome, Receipt, Submission
from broker.model.events import CaseCreated
from broker.runtime.process import Broker
from broker.settings import Settings
from broker.store.tables import CaseRecord


@pytest.fixture
def broker(tmp_path: Path) -> Broker:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'batcher.db'}", amqp_url="memory://",
                        mappings_dir=write_mappings(tmp_path / "mappings", "http://127.0.0.1:9"),
                        schedules_dir=tmp_path)
    made = Broker(settings)
    made.migrate()
    return made


def _submission(case_id: str) -> Submission:
    return Submission(CaseCreated.model_validate(case_created(case_id)), "http", "crm", None)


def test_submissions_from_many_threads_are_each_answered_after_their_commit(broker: Broker) -> None:
    stop = threading.Event()
    commits: list[int] = []
    batcher = IntakeBatcher(broker.intake, stop=stop, linger_seconds=0.01,
                            after_commit=lambda: commits.append(1))
    batcher.start()
    futures: list[Future[Outcome]] = []
    lock = threading.Lock()

    def submit(number: int) -> None:
        future = batcher.submit(_submission(f"BATCH-{number}"))
        with lock:
            futures.append(future)

    threads = [threading.Thread(target=submit, args=(n,)) for n in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    outcomes = [future.result(timeout=10) for future in futures]
    assert all(isinstance(outcome, Receipt) and not outcome.duplicate for outcome in outcomes)
    assert sorted(outcome.case_id for outcome in outcomes if isinstance(outcome, Receipt)) == \
        sorted(f"BATCH-{n}" for n in range(40))
    assert 1 <= len(commits) < 40  # shared transactions
    with broker.store.read() as session:
        assert session.scalar(select(func.count()).select_from(CaseRecord)) == 40
    stop.set()
    batcher.join(5)
    assert not batcher.is_alive()
    broker.shutdown()


def test_once_stopped_a_submission_is_refused_not_left_waiting(broker: Broker) -> None:
    stop = threading.Event()
    batcher = IntakeBatcher(broker.intake, stop=stop)
    batcher.start()
    assert isinstance(batcher.submit(_submission("BEFORE-STOP")).result(timeout=10), Receipt)
    stop.set()
    batcher.join(5)
    late = batcher.submit(_submission("AFTER-STOP"))
    with pytest.raises(RuntimeError, match="stopping"):
        late.result(timeout=1)
    with broker.store.read() as session:
        assert set(session.scalars(select(CaseRecord.case_id))) == {"BEFORE-STOP"}
    broker.shutdown()
