"""The webhook adapter against a real HTTP server: what it sends, and how it classifies every answer."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from pydantic import ValidationError
from support.envelopes import case_created, envelope, note_added
from support.receiver import Answer, WebhookReceiver

from adapters.webhook.adapter import WebhookAdapter
from adapters.webhook.config import WebhookConfig
from broker.errors import DeliveryError, PermanentDeliveryError, TransientDeliveryError
from broker.model import parse_event
from broker.plugins.contract import Capability, DeliveryRequest
from broker.plugins.registry import AdapterConfigInvalid, AdapterMappingInvalid, adapter_class, build_adapter

SECRET_ENV = "CASEBRIDGE_TEST_WEBHOOK_SECRET"
SECRET = "s3cret-for-tests"
MAPPING: dict[str, Any] = {"service_codes": {"highways.pothole": "POT"}, "statuses": {"open": "NEW"}}


# --- A second, byte-exact receiver ------------------------------------------------------------------------------


@dataclass
class RawAnswer:
    status: int = 201
    body: bytes = b'{"reference": "RAW-1"}'
    content_type: str = "application/json"


@dataclass
class RawRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class RawReceiver:
    """Keeps each request's body exactly as sent and answers with exact bytes (JSON or not)."""

    requests: list[RawRequest] = field(default_factory=list)
    answers: deque[RawAnswer] = field(default_factory=deque)

    def __post_init__(self) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.requests.append(RawRequest("POST", self.path, {k.lower(): v for k, v in self.headers.items()},
                                                    body))
                answer = receiver.answers.popleft() if receiver.answers else RawAnswer()
                self.send_response(answer.status)
                self.send_header("Content-Type", answer.content_type)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)

            def log_message(self, format: str, *args: object) -> None:
                return

        return Handler


@pytest.fixture
def raw() -> Iterator[RawReceiver]:
    server = RawReceiver()
    yield server
    server.close()


# --- Helpers ----------------------------------------------------------------------------------------------------


def make_adapter(url: str, mapping: dict[str, Any] | None = None, **settings: Any) -> WebhookAdapter:
    adapter = build_adapter("webhook", "highways", {"url": url, **settings}, MAPPING if mapping is None else mapping)
    assert isinstance(adapter, WebhookAdapter)
    return adapter


@pytest.fixture
def target(receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch) -> Iterator[WebhookAdapter]:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    adapter = make_adapter(f"{receiver.url}/highways", secret_env=SECRET_ENV, timeout_seconds=1,
                           reference_field="job_number")
    yield adapter
    adapter.close()


def request(document: dict[str, Any] | None = None, *, attempt: int = 1,
            external_ref: str | None = None) -> DeliveryRequest:
    event = parse_event(json.dumps(document or case_created("W-1")).encode())
    return DeliveryRequest(target="highways", event=event, our_reference="CB-1234", external_ref=external_ref,
                           attempt=attempt)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def signature(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


# --- Successful delivery ----------------------------------------------------------------------------------------


def test_the_adapter_is_found_by_name_and_declares_its_capabilities() -> None:
    assert adapter_class("webhook") is WebhookAdapter
    assert WebhookAdapter.config_model is WebhookConfig
    assert {Capability.create, Capability.update, Capability.lookup} == WebhookAdapter.capabilities


def test_delivers_a_created_case_and_returns_the_receivers_reference(
    target: WebhookAdapter, receiver: WebhookReceiver
) -> None:
    receiver.answer("/highways", Answer(201, {"job_number": "JOB-77", "reference": "not this one"}))
    sent = request(attempt=2)
    outcome = target.deliver(sent)

    assert outcome.external_ref == "JOB-77"
    assert outcome.detail == {"http_status": 201}
    (received,) = receiver.on("/highways")
    assert received.headers["content-type"] == "application/json"
    assert received.headers["x-casebridge-event"] == "case.created"
    assert received.headers["x-casebridge-attempt"] == "2"
    assert received.body["our_reference"] == "CB-1234"
    assert received.body["external_ref"] is None
    assert received.body["target_service_code"] == "POT"
    assert received.body["target_status"] == "NEW"
    assert received.body["event"]["case"]["case_id"] == "W-1"
    assert "correlation_id" not in received.body["event"]  # nulls are left out
    assert parse_event(json.dumps(received.body["event"])) == sent.event


def test_the_default_reference_field_is_reference(receiver: WebhookReceiver) -> None:
    adapter = make_adapter(f"{receiver.url}/plain")
    try:
        outcome = adapter.deliver(request())
    finally:
        adapter.close()
    (received,) = receiver.on("/plain")
    assert received.reference.startswith("REF-")
    assert outcome.external_ref == received.reference
    assert "x-casebridge-signature" not in received.headers  # no secret configured, nothing signed


@pytest.mark.parametrize(("answer", "reference"), [
    (RawAnswer(200, b'{"job_number": 1234}'), "1234"),
    (RawAnswer(201, b'{"job_number": "  J-9 "}'), "  J-9 "),
    (RawAnswer(202, b'{"status": "queued"}'), None),
    (RawAnswer(200, b'{"job_number": ""}'), None),
    (RawAnswer(200, b'{"job_number": null}'), None),
    (RawAnswer(200, b'["JOB-1"]'), None),
    (RawAnswer(200, b"Thanks, received", "text/plain"), None),
    (RawAnswer(204, b""), None),
], ids=["number", "string", "absent", "empty", "null", "list", "text", "no-content"])
def test_a_2xx_is_delivered_whatever_its_body(raw: RawReceiver, answer: RawAnswer, reference: str | None) -> None:
    raw.answers.append(answer)
    adapter = make_adapter(f"{raw.url}/jobs", reference_field="job_number")
    try:
        outcome = adapter.deliver(request())
    finally:
        adapter.close()
    assert outcome.external_ref == reference
    assert outcome.detail == {"http_status": answer.status}


def test_an_update_carries_the_external_reference(target: WebhookAdapter, receiver: WebhookReceiver) -> None:
    document = envelope("case.updated", case={**case_created("W-1")["case"], "status": "in_progress"})
    target.deliver(request(document, external_ref="JOB-77"))
    (received,) = receiver.on("/highways")
    assert received.headers["x-casebridge-event"] == "case.updated"
    assert received.body["external_ref"] == "JOB-77"
    assert received.body["target_service_code"] == "POT"
    assert received.body["target_status"] == "in_progress"  # not in the statuses map: sent as canonical


def test_a_follow_up_event_has_no_target_codes(target: WebhookAdapter, receiver: WebhookReceiver) -> None:
    target.deliver(request(note_added("W-1", "Crew on site"), external_ref="JOB-77"))
    (received,) = receiver.on("/highways")
    assert received.headers["x-casebridge-event"] == "case.note_added"
    assert received.body["event"]["note"]["text"] == "Crew on site"
    assert "target_service_code" not in received.body
    assert "target_status" not in received.body


def test_configured_extra_headers_are_sent(receiver: WebhookReceiver) -> None:
    adapter = make_adapter(f"{receiver.url}/h", headers={"X-Council": "Exampleshire", "Accept": "application/json"})
    try:
        adapter.deliver(request())
    finally:
        adapter.close()
    (received,) = receiver.on("/h")
    assert received.headers["x-council"] == "Exampleshire"
    assert received.headers["accept"] == "application/json"


# --- Idempotency key and signature ------------------------------------------------------------------------------


def test_the_idempotency_key_is_the_event_id_on_every_attempt(target: WebhookAdapter,
                                                              receiver: WebhookReceiver) -> None:
    sent = request()
    receiver.answer("/highways", Answer(503), Answer(201))
    with pytest.raises(TransientDeliveryError):
        target.deliver(sent)
    target.deliver(replace(sent, attempt=2))
    first, second = receiver.on("/highways")
    assert first.headers["idempotency-key"] == second.headers["idempotency-key"] == str(sent.event.event_id)
    assert (first.headers["x-casebridge-attempt"], second.headers["x-casebridge-attempt"]) == ("1", "2")

    other = request()
    target.deliver(other)
    assert receiver.on("/highways")[2].headers["idempotency-key"] == str(other.event.event_id)
    assert str(other.event.event_id) != str(sent.event.event_id)


def test_the_signature_is_hmac_sha256_of_the_exact_body(raw: RawReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    adapter = make_adapter(f"{raw.url}/signed", secret_env=SECRET_ENV)
    try:
        adapter.deliver(request(case_created("W-1", description="Pothole near Café Noël — deep")))
    finally:
        adapter.close()
    (received,) = raw.requests
    sent = received.headers["x-casebridge-signature"]
    assert hmac.compare_digest(sent, signature(received.body))
    assert not hmac.compare_digest(sent, signature(received.body, "another secret"))
    assert not hmac.compare_digest(sent, signature(received.body + b" "))
    assert json.loads(received.body)["event"]["case"]["description"] == "Pothole near Café Noël — deep"


def test_the_signature_matches_the_receivers_view_of_the_body(target: WebhookAdapter,
                                                              receiver: WebhookReceiver) -> None:
    target.deliver(request())
    (received,) = receiver.on("/highways")
    body = json.dumps(received.body, separators=(",", ":")).encode()
    assert received.headers["x-casebridge-signature"] == signature(body)


def test_a_missing_secret_is_not_silently_ignored(receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SECRET_ENV, raising=False)
    try:
        adapter = make_adapter(f"{receiver.url}/unsigned", secret_env=SECRET_ENV)
        adapter.deliver(request())
    except DeliveryError:
        pass
    unsigned = [item for item in receiver.on("/unsigned") if "x-casebridge-signature" not in item.headers]
    assert unsigned == []


# --- Transient answers ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_busy_or_broken_receivers_are_transient_and_retry_after_is_honoured(
    status: int, target: WebhookAdapter, receiver: WebhookReceiver
) -> None:
    receiver.answer("/highways", Answer(status, {"error": "try later"}, headers={"Retry-After": "120"}))
    with pytest.raises(TransientDeliveryError) as caught:
        target.deliver(request())
    error = caught.value
    assert error.reason == f"http_{status}"
    assert error.retry_after == 120.0
    assert error.message == f"HTTP {status} from {receiver.url}/highways"
    assert str(error) == f"http_{status}: HTTP {status} from {receiver.url}/highways"
    assert "try later" in (error.response_excerpt or "")
    assert not isinstance(error, PermanentDeliveryError)
    assert len(receiver.on("/highways")) == 1


@pytest.mark.parametrize("status", [429, 503])
def test_without_retry_after_there_is_no_hint(status: int, target: WebhookAdapter, receiver: WebhookReceiver) -> None:
    receiver.answer("/highways", Answer(status))
    with pytest.raises(TransientDeliveryError) as caught:
        target.deliver(request())
    assert caught.value.retry_after is None


@pytest.mark.parametrize(("header", "expected"), [
    ("0", 0.0), (" 7 ", 7.0), ("3600", 3600.0), ("soon", None), ("-5", None), ("1.5", None),
])
def test_retry_after_seconds(header: str, expected: float | None, target: WebhookAdapter,
                             receiver: WebhookReceiver) -> None:
    receiver.answer("/highways", Answer(429, headers={"Retry-After": header}))
    with pytest.raises(TransientDeliveryError) as caught:
        target.deliver(request())
    assert caught.value.retry_after == expected


def test_retry_after_as_an_http_date(target: WebhookAdapter, receiver: WebhookReceiver) -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=90), usegmt=True)
    receiver.answer("/highways", Answer(503, headers={"Retry-After": when}))
    with pytest.raises(TransientDeliveryError) as caught:
        target.deliver(request())
    assert caught.value.retry_after is not None
    assert 80 <= caught.value.retry_after <= 91


def test_retry_after_as_a_past_http_date_means_now(target: WebhookAdapter, receiver: WebhookReceiver) -> None:
    receiver.answer("/highways", Answer(503, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}))
    with pytest.raises(TransientDeliveryError) as caught:
        target.deliver(request())
    assert caught.value.retry_after == 0.0


@pytest.mark.parametrize("header", ["Wed, 21 Oct 2015 07:28:00", "Wed, 21 Oct 2015 07:28:00 -0000"])
def test_a_retry_after_date_without_a_zone_is_still_transient(header: str, target: WebhookAdapter,
                                                              receiver: WebhookReceiver) -> None:
    receiver.answer("/highways", Answer(503, headers={"Retry-After": header}))
    with pytest.raises(TransientDeliveryError):
        target.deliver(request())


# --- Permanent answers ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 410, 422])
def test_rejections_are_permanent_with_the_receivers_words(status: int, target: WebhookAdapter,
                                                           receiver: WebhookReceiver) -> None:
    receiver.answer("/highways", Answer(status, {"error": "postcode outside our area"},
                                        headers={"Retry-After": "60"}))
    with pytest.raises(PermanentDeliveryError) as caught:
        target.deliver(request())
    error = caught.value
    assert not isinstance(error, TransientDeliveryError)
    assert error.reason == f"http_{status}"
    assert error.message == f"HTTP {status} from {receiver.url}/highways"
    assert str(error) == f"http_{status}: {error.message}"
    assert json.loads(error.response_excerpt or "") == {"error": "postcode outside our area"}
    assert not hasattr(error, "retry_after")


def test_a_long_rejection_is_cut_to_an_excerpt(raw: RawReceiver) -> None:
    raw.answers.append(RawAnswer(422, b"x" * 5_000, "text/plain"))
    adapter = make_adapter(f"{raw.url}/long")
    try:
        with pytest.raises(PermanentDeliveryError) as caught:
            adapter.deliver(request())
    finally:
        adapter.close()
    assert caught.value.response_excerpt == "x" * 2_000


# --- Service code mapping ---------------------------------------------------------------------------------------


def test_an_unmapped_service_code_fails_before_any_request(target: WebhookAdapter,
                                                           receiver: WebhookReceiver) -> None:
    with pytest.raises(PermanentDeliveryError) as caught:
        target.deliver(request(case_created("W-2", service_code="highways.street_light")))
    assert caught.value.reason == "unmapped_service_code"
    assert "'highways.street_light'" in caught.value.message
    assert "'highways'" in caught.value.message
    assert receiver.received == []


def test_an_unmapped_code_passes_through_when_told_to(receiver: WebhookReceiver) -> None:
    adapter = make_adapter(f"{receiver.url}/pass", {**MAPPING, "unmapped_service": "pass_through"})
    try:
        adapter.deliver(request(case_created("W-2", service_code="highways.street_light")))
        adapter.deliver(request(case_created("W-3")))
    finally:
        adapter.close()
    assert [item.body["target_service_code"] for item in receiver.on("/pass")] == ["highways.street_light", "POT"]


def test_an_empty_service_code_map_sends_canonical_codes(receiver: WebhookReceiver) -> None:
    adapter = make_adapter(f"{receiver.url}/canonical", {})
    try:
        adapter.deliver(request(case_created("W-2", service_code="waste.missed_bin")))
    finally:
        adapter.close()
    (received,) = receiver.on("/canonical")
    assert received.body["target_service_code"] == "waste.missed_bin"
    assert received.body["target_status"] == "open"


# --- Lookup of an earlier delivery ------------------------------------------------------------------------------


def test_without_a_lookup_url_nothing_is_looked_up(target: WebhookAdapter, receiver: WebhookReceiver) -> None:
    assert target.find_delivered(request()) is None
    assert receiver.lookups == 0


def test_a_lookup_finds_an_earlier_delivery(receiver: WebhookReceiver) -> None:
    adapter = make_adapter(f"{receiver.url}/jobs", lookup_url=f"{receiver.url}/jobs/lookup")
    sent = request()
    try:
        assert adapter.find_delivered(sent) is None
        delivered = adapter.deliver(sent)
        found = adapter.find_delivered(sent)
        assert adapter.find_delivered(request()) is None
    finally:
        adapter.close()
    assert found is not None
    assert found.external_ref == delivered.external_ref
    assert found.detail == {"found_by_lookup": True}
    assert receiver.lookups == 3


def test_a_lookup_that_cannot_answer_is_transient(receiver: WebhookReceiver) -> None:
    adapter = make_adapter(f"{receiver.url}/jobs", lookup_url=f"http://127.0.0.1:{closed_port()}/lookup")
    down = make_adapter(f"{receiver.url}/jobs", lookup_url=f"{receiver.url}/jobs/lookup")
    receiver.outage(30)
    try:
        with pytest.raises(TransientDeliveryError) as refused:
            adapter.find_delivered(request())
        with pytest.raises(TransientDeliveryError) as unavailable:
            down.find_delivered(request())
    finally:
        adapter.close()
        down.close()
    assert refused.value.reason == "lookup_connection"
    assert unavailable.value.reason == "lookup_http_503"


# --- Configuration ----------------------------------------------------------------------------------------------


def test_config_defaults() -> None:
    config = WebhookConfig.model_validate({"url": "https://lob.example.org/hook"})
    assert str(config.url) == "https://lob.example.org/hook"
    assert config.timeout_seconds == 30.0
    assert config.secret_env is None
    assert config.reference_field == "reference"
    assert config.headers == {}
    assert config.lookup_url is None


@pytest.mark.parametrize(("settings", "field", "error_type"), [
    ({"url": "not a url"}, "url", "url_parsing"),
    ({"url": ""}, "url", "url_parsing"),
    ({"url": "ftp://lob.example.org/drop"}, "url", "url_scheme"),
    ({"url": "mailto:lob@example.org"}, "url", "url_scheme"),
    ({}, "url", "missing"),
    ({"url": "http://127.0.0.1/x", "password": "hunter2"}, "password", "extra_forbidden"),
    ({"url": "http://127.0.0.1/x", "secret": "hunter2"}, "secret", "extra_forbidden"),
    ({"url": "http://127.0.0.1/x", "timeout_seconds": 0}, "timeout_seconds", "greater_than"),
    ({"url": "http://127.0.0.1/x", "timeout_seconds": 601}, "timeout_seconds", "less_than_equal"),
    ({"url": "http://127.0.0.1/x", "secret_env": "lower-case"}, "secret_env", "string_pattern_mismatch"),
    ({"url": "http://127.0.0.1/x", "lookup_url": "nowhere"}, "lookup_url", "url_parsing"),
])
def test_bad_settings_are_refused_naming_the_field(settings: dict[str, Any], field: str, error_type: str) -> None:
    with pytest.raises(ValidationError) as caught:
        WebhookConfig.model_validate(settings)
    assert [(error["loc"], error["type"]) for error in caught.value.errors()] == [((field,), error_type)]

    with pytest.raises(AdapterConfigInvalid) as refused:
        build_adapter("webhook", "lob", settings, {})
    assert [location for location, _ in refused.value.errors] == [field]
    assert str(refused.value).startswith(f"target 'lob': settings.{field}: ")


def test_a_bad_mapping_file_is_reported() -> None:
    problems = WebhookAdapter.mapping_problems({"service_codes": {"a": "b"}, "unmapped_service": "guess"})
    assert [location for location, _ in problems] == [("unmapped_service",)]
    problems = WebhookAdapter.mapping_problems({"service_code": {"a": "b"}})
    assert [location for location, _ in problems] == [("service_code",)]
    assert WebhookAdapter.mapping_problems(MAPPING) == []


def test_an_adapter_is_not_built_with_a_bad_mapping() -> None:
    with pytest.raises(AdapterMappingInvalid, match=r"statuses\.open: Input should be a valid string"):
        make_adapter("http://127.0.0.1/x", {"statuses": {"open": 1}})
