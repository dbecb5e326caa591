"""``broker users create`` and the demo's console account, run as real processes."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest
from support.processes import BROKER_COMMAND, broker_env, printed_after, run_broker, running_demo_process

from broker.console.accounts import sign_in
from broker.store.database import Store, upgrade


@pytest.fixture
def database(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'casebridge.db'}"
    upgrade(url)
    return url


def create(env: dict[str, str], cwd: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([BROKER_COMMAND, "users", "create", *args], env=env, cwd=cwd, input=stdin,
                          capture_output=True, text=True, timeout=60, check=False)


def test_users_create_makes_an_account_that_can_sign_in(database: str, tmp_path: Path) -> None:
    env = broker_env(database_url=database)
    made = create(env, tmp_path, "j.smith", "--role", "operator", "--password-stdin", stdin="a long passphrase 1\n")
    assert made.returncode == 0, made.stderr
    assert "j.smith" in made.stderr and "operator" in made.stderr
    store = Store(database)
    try:
        assert sign_in(store, "j.smith", "a long passphrase 1", "127.0.0.1")
        assert sign_in(store, "j.smith", "a long passphrase 2", "127.0.0.1") == ""
    finally:
        store.dispose()

    from_env = create({**env, "CASEBRIDGE_NEW_USER_PASSWORD": "another passphrase"}, tmp_path, "k.jones")
    assert from_env.returncode == 0, from_env.stderr


@pytest.mark.parametrize(("args", "password", "complaint"), [
    (["a.b", "--role", "superuser"], "a long passphrase 1", "role must be one of"),
    (["a.b"], "short", "at least 12"),
    (["a b"], "a long passphrase 1", "a name is"),
])
def test_users_create_refuses_bad_accounts_clearly(database: str, tmp_path: Path, args: list[str], password: str,
                                                   complaint: str) -> None:
    result = create(broker_env(database_url=database), tmp_path, *args, "--password-stdin", stdin=password + "\n")
    assert result.returncode == 2
    assert complaint in result.stderr and "Traceback" not in result.stderr


def test_a_name_is_taken_once(database: str, tmp_path: Path) -> None:
    env = broker_env(database_url=database)
    assert create(env, tmp_path, "sam", "--password-stdin", stdin="a long passphrase 1\n").returncode == 0
    again = create(env, tmp_path, "sam", "--password-stdin", stdin="a long passphrase 1\n")
    assert again.returncode == 2 and "already" in again.stderr


def test_users_create_explains_itself(tmp_path: Path) -> None:
    result = run_broker("users", "create", "--help", env=broker_env(), cwd=tmp_path)
    assert result.returncode == 0 and "--password-stdin" in result.stdout


def test_the_demo_prints_a_console_account_that_signs_in(tmp_path: Path) -> None:
    with running_demo_process(tmp_path) as (demo, url), httpx.Client(base_url=url) as client:
        password = printed_after(demo, "sign in as demo with password")
        signed_in = client.post("/v1/console/session", json={"name": "demo", "password": password})
        assert signed_in.status_code == 200 and signed_in.json()["role"] == "operator"
        assert "Dashboard" in client.get("/console").text


def test_users_list_and_disable(database: str, tmp_path: Path) -> None:
    env = broker_env(database_url=database)
    assert create(env, tmp_path, "tom", "--role", "admin", "--password-stdin", stdin="a long passphrase 1\n"
                  ).returncode == 0
    listed = run_broker("users", "list", env=env, cwd=tmp_path)
    assert listed.returncode == 0 and "tom" in listed.stdout and "admin" in listed.stdout
    assert "passphrase" not in listed.stdout
    disabled = run_broker("users", "disable", "tom", env=env, cwd=tmp_path)
    assert disabled.returncode == 0, disabled.stderr
    store = Store(database)
    try:
        assert sign_in(store, "tom", "a long passphrase 1", "127.0.0.1") == ""
    finally:
        store.dispose()
    missing = run_broker("users", "disable", "nobody", env=env, cwd=tmp_path)
    assert missing.returncode == 2 and "no account" in missing.stderr
