"""A broker configured with a batch target whose SFTP server is a real sshd (see support/sftp.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import paramiko
import pytest
from sqlalchemy import func, select

from broker.intake.transaction import Submission
from broker.model.events import CaseCreated
from broker.runtime.process import Broker
from broker.scheduling.context import JobContext
from broker.settings import Settings
from broker.store.tables import DeliveryRecord
from support.sftp import SftpServer, sftp_server

TARGET = "waste-contractor"
KEY_ENV = "CASEBRIDGE_TEST_SFTP_KEY"
PASSWORD_ENV = "CASEBRIDGE_TEST_SFTP_PASSWORD"

SERVICES = """\
services:
  waste.missed_bin: {name: Missed bin}
  waste.fly_tipping: {name: Fly-tipping}
"""
ROUTES = """\
targets:
  waste-contractor:
    adapter: webhook
    system: waste-contractor
    settings: {url: "http://127.0.0.1:9/waste"}
  crm:
    adapter: webhook
    system: crm
    settings: {url: "http://127.0.0.1:9/crm"}
routes:
  - name: waste overnight file
    services: ["waste.*"]
    events: {batch_events}
    deliver:
      - {target: waste-contractor, mode: batch}
  - name: progress back to the CRM
    services: ["*"]
    events: [case.status_changed, case.closed]
    deliver:
      - {target: crm}
"""
MAPPING = """\
batch:
  sftp:
    host: 127.0.0.1
    port: {port}
    username: {user}
    known_hosts: {known_hosts}
    key_path_env: {key_env}
    timeout_seconds: 10
  export:
    encoding: {export_encoding}
    line_ending: crlf
    columns:
      - {{header: Council Ref, field: case_id}}
      - {{header: Job Type, field: service_code, codes: {{waste.missed_bin: MISSED, waste.fly_tipping: FLYTIP}}}}
      - {{header: Logged, field: occurred_at}}
      - {{header: Address, field: case.location.address}}
      - {{header: Postcode, field: case.location.postcode}}
      - {{header: Bin Type, field: case.attributes.bin_type}}
      - {{header: Details, field: case.description}}
  import:
    encoding: auto
    columns:
      case_id: Council Ref
      lob_ref: CRNo
      status: Stage Desc.
      occurred_at: History Date/Time
      notes: Comments
      service: Job Type
      address: Address
      postcode: Postcode
    statuses:
      Logged: open
      Scheduled: action_scheduled
      Completed: fixed
      No Access: no_further_action
    services:
      MISSED: waste.missed_bin
"""
EXPORT_OPTIONS: dict[str, Any] = {"target": TARGET, "direction": "export", "remote_dir": "outbound",
                                  "file_name": "CASEBRIDGE_{now:%Y%m%d_%H%M%S}.CSV"}
IMPORT_OPTIONS: dict[str, Any] = {"target": TARGET, "direction": "import", "remote_dir": "inbound",
                                  "pattern": "CSVEXP_*.CSV", "archive_dir": "inbound/archive",
                                  "settle_seconds": 0.2}


def write_batch_mappings(directory: Path, server: SftpServer, known_hosts: Path | None = None,
                         export_encoding: str = "utf-8", batch_events: str = "[case.created]") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "services.yaml").write_text(SERVICES)
    (directory / "routes.yaml").write_text(ROUTES.replace("{batch_events}", batch_events))
    mapping = MAPPING.format(port=server.port, user=server.user, known_hosts=known_hosts or server.known_hosts,
                             key_env=KEY_ENV, export_encoding=export_encoding)
    if server.password is not None:
        mapping = mapping.replace(f"key_path_env: {KEY_ENV}", f"password_env: {PASSWORD_ENV}")
    (directory / f"{TARGET}.yaml").write_text(mapping)
    return directory


@dataclass
class BatchWorld:
    server: SftpServer
    broker: Broker
    settings: Settings

    @property
    def store(self) -> Any:
        return self.broker.store

    def context(self, schedule: str = "waste-export", **changes: Any) -> JobContext:
        context = JobContext(self.broker.store, self.broker.configuration, self.broker.intake,
                             schedule=schedule)
        return replace(context, **changes)

    @contextmanager
    def lob(self) -> Iterator[paramiko.SFTPClient]:
        """The contractor's side of the server: a separate SFTP login, as their system would use."""
        with self.server.login() as sftp:
            yield sftp

    def put(self, name: str, content: bytes, directory: str = "inbound") -> None:
        with self.lob() as sftp:
            _mkdir(sftp, directory)
            with sftp.open(f"{directory}/{name}", "wb") as remote:
                remote.write(content)

    def listing(self, directory: str) -> list[str]:
        path = self.server.root / directory
        return sorted(entry.name for entry in path.iterdir()) if path.is_dir() else []

    def seed_cases(self, count: int, start: int = 0, **case: Any) -> list[str]:
        submissions, ids = [], []
        for number in range(start, start + count):
            case_id = f"CRM-{number:06d}"
            ids.append(case_id)
            body = {
                "case_id": case_id, "service_code": "waste.missed_bin", "channel": "web",
                "description": f"Bin not collected, number {number}",
                "location": {"address": f"{number} High Street, Flat 2", "postcode": "SW1A 1AA"},
                "attributes": {"bin_type": "general"}, **case,
            }
            event = CaseCreated.model_validate({"event_id": str(uuid.uuid4()), "occurred_at": "2026-11-20T09:15:00Z",
                                                "source": "crm", "case": body})
            submissions.append(Submission(event, "http", "system:crm"))
        for start_at in range(0, len(submissions), 500):
            self.broker.intake.accept_many(submissions[start_at:start_at + 500])
        return ids

    def delivery_states(self, target: str = TARGET) -> dict[str, int]:
        with self.store.read() as session:
            rows = session.execute(select(DeliveryRecord.state, func.count()).where(DeliveryRecord.target == target)
                                   .group_by(DeliveryRecord.state)).all()
        return {state: count for state, count in rows}


def _mkdir(sftp: paramiko.SFTPClient, directory: str) -> None:
    path = ""
    for part in directory.split("/"):
        path = f"{path}/{part}" if path else part
        try:
            sftp.stat(path)
        except FileNotFoundError:
            sftp.mkdir(path)


@contextmanager
def batch_world(tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch, password_login: bool = False,
                **mapping: Any) -> Iterator[BatchWorld]:
    with sftp_server(tmp_path / "sshd", password_login) as server:
        monkeypatch.setenv(KEY_ENV, str(server.user_key))
        if server.password is not None:
            monkeypatch.setenv(PASSWORD_ENV, server.password)
        mappings = write_batch_mappings(tmp_path / "mappings", server, **mapping)
        schedules = tmp_path / "schedules"
        schedules.mkdir(exist_ok=True)
        settings = Settings(database_url=database_url, amqp_url="memory://",
                            amqp_namespace=f"cbtest-{uuid.uuid4().hex[:8]}", mappings_dir=mappings,
                            schedules_dir=schedules)
        broker = Broker(settings)
        broker.migrate()
        try:
            yield BatchWorld(server, broker, settings)
        finally:
            broker.shutdown()
