"""The Open311 endpoint under pressure: a key over its rate, and a store that cannot be reached, each answered in the
spec's error format with ``Retry-After`` -- never a 500 -- and served again once the pressure is off."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import psycopg
import pytest
from support.harness import RunningBroker
from support.open311_schemas import check_answer
from support.services import POSTGRES_URL, postgres_database

from broker.store.keys import create_key


def report(key: str, number: int) -> dict[str, str]:
    return {"api_key": key, "service_code": "highways.pothole", "lat": "51.5", "long": "-0.12",
            "description": "A hole", "attribute[fixmystreet_id]": str(number)}


def test_a_key_over_its_rate_is_told_when_to_come_back(broker_with: Callable[..., RunningBroker]) -> None:
    running = broker_with(api_rate_per_second=1, api_rate_burst=2)
    key = create_key(running.broker.store, "fixmystreet")
    url = f"{running.base_url}/open311/v2/requests.xml"
    answers = [httpx.post(url, data=report(key, n)) for n in range(4)]
    assert [answer.status_code for answer in answers[:2]] == [200, 200]
    over = answers[-1]
    check_answer("errors", "xml", over.status_code, over.headers["content-type"], over.content)
    assert over.status_code == 400 and b"<code>429</code>" in over.content and b"api_key: over its rate" in over.content
    assert int(over.headers["retry-after"]) >= 1
    time.sleep(int(over.headers["retry-after"]) + 0.1)
    assert httpx.post(url, data=report(key, 99)).status_code == 200


@pytest.mark.postgres
def test_a_store_out_of_reach_is_503_with_retry_after_then_served_again(
        broker_with: Callable[..., RunningBroker]) -> None:
    with postgres_database(migrated=True) as database_url:
        running = broker_with(database_url=database_url)
        key = create_key(running.broker.store, "fixmystreet")
        url = f"{running.base_url}/open311/v2/"
        assert httpx.post(f"{url}requests.xml", data=report(key, 1)).status_code == 200
        database = database_url.rsplit("/", 1)[1]
        _allow_connections(database, False)
        try:
            for answer in (httpx.post(f"{url}requests.json", data=report(key, 2)),
                           httpx.get(f"{url}servicerequestupdates.xml", params={"api_key": key})):
                fmt = "json" if answer.request.url.path.endswith(".json") else "xml"
                check_answer("errors", fmt, answer.status_code, answer.headers["content-type"], answer.content)
                assert answer.status_code == 503, answer.text
                assert answer.headers["retry-after"] == "5"
        finally:
            _allow_connections(database, True)
        assert httpx.post(f"{url}requests.xml", data=report(key, 2)).status_code == 200
        running.stop()


def _allow_connections(database: str, allowed: bool) -> None:
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS {str(allowed).lower()}')
        if not allowed:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                          "AND pid <> pg_backend_pid()", (database,))
