"""Signing in to the support console from tests."""

from __future__ import annotations

import httpx

from broker.console.accounts import create_user
from broker.store.database import Store

PASSWORD = "correct horse battery"


def officer_client(store: Store, base_url: str, name: str, role: str) -> httpx.Client:
    """A client signed in as a new account; POSTs carry the session's CSRF token."""
    create_user(store, name, role, PASSWORD)
    client = httpx.Client(base_url=base_url, timeout=30)
    response = client.post("/v1/console/session", json={"name": name, "password": PASSWORD})
    assert response.status_code == 200, response.text
    client.headers["X-CSRF-Token"] = response.json()["csrf_token"]
    return client
