"""Every traceback, ours or a library's, is one JSON line with the personal data it would quote taken out."""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import structlog
from kombu import Connection, Exchange, Queue
from support.envelopes import case_created
from support.harness import RunningBroker

from broker.logging import configure_logging
from broker.transport.consumer import QueueConsumer

#: What a database error says about a row with personal data in it (PostgreSQL quotes the JSON at fault).
LEAKY = ("unsupported Unicode escape sequence in 'Ada Lovelace'\nDETAIL: \\u0000 cannot be converted to text.\n"
         'CONTEXT: JSON data, line 1: {"name": "Ada Lovelace", "address": "12 Acacia Avenue"')


@pytest.fixture
def json_logs(capfd: pytest.CaptureFixture[str]) -> Iterator[None]:
    """configure_logging() for one test (writing where capfd reads), and everything it changed put back after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    hooks = sys.excepthook, threading.excepthook
    configure_logging("INFO")
    yield
    structlog.reset_defaults()
    root.handlers, root.level = handlers, level
    sys.excepthook, threading.excepthook = hooks


def lines_of(text: str) -> list[dict[str, Any]]:
    """Each line as JSON (failing on any that is not)."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_an_unhandled_error_in_the_api_is_logged_as_one_redacted_json_line(
        json_logs: None, broker_with: Callable[..., RunningBroker], capfd: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    running = broker_with()
    capfd.readouterr()

    def accept(*_args: Any, **_kwargs: Any) -> Any:
        raise ValueError(LEAKY)

    monkeypatch.setattr(running.broker.intake, "accept_many", accept)
    assert running.post_case(case_created("LOG-1")).status_code == 500
    running.stop()
    err = capfd.readouterr().err
    assert "Lovelace" not in err and "Acacia" not in err
    logged = lines_of(err)
    [crash] = [line for line in logged if line.get("event", "").strip() == "Exception in ASGI application"]
    assert crash["logger"] == "uvicorn.error" and crash["level"] == "error"
    assert crash["exception"][0]["error"] == "ValueError: unsupported Unicode escape sequence in '…'"
    assert any("broker/api/app.py" in frame for frame in crash["exception"][0]["frames"])


def test_an_uncaught_exception_in_a_thread_is_one_redacted_json_line(
        json_logs: None, capfd: pytest.CaptureFixture[str]) -> None:
    def crash() -> None:
        raise RuntimeError(LEAKY)

    thread = threading.Thread(target=crash, name="probe")
    thread.start()
    thread.join()
    err = capfd.readouterr().err
    assert "Lovelace" not in err
    [line] = lines_of(err)
    assert line["event"] == "thread.uncaught_exception" and line["thread"] == "probe"
    assert line["exception"][0]["error"].startswith("RuntimeError: unsupported Unicode escape sequence")


def test_a_poison_reason_and_its_log_lines_never_quote_the_message(
        json_logs: None, capfd: pytest.CaptureFixture[str]) -> None:
    reasons: list[str] = []
    stop = threading.Event()

    def handler(_message: Any) -> None:
        raise ValueError(LEAKY)

    queue = Queue("probe-poison", Exchange("probe-poison", type="direct"), routing_key="probe")
    connection = Connection("memory://")
    consumer = QueueConsumer("probe", lambda: Connection("memory://"), queue, handler, prefetch=1, stop=stop,
                             on_poison=lambda _message, why: (reasons.append(why), stop.set()), poison_after=2)
    consumer.failure_pause = 0.01
    consumer.start()
    assert consumer.ready.wait(10)
    with connection.Producer() as producer:
        producer.publish({"name": "Ada Lovelace"}, exchange=queue.exchange, routing_key="probe", declare=[queue])
    consumer.join(20)
    connection.release()
    assert reasons == ["processing failed 2 times; last error ValueError: unsupported Unicode escape sequence in '…'"]
    err = capfd.readouterr().err
    assert "Lovelace" not in err and "Acacia" not in err
    assert any(line["event"] == "consumer.handler_error" for line in lines_of(err))


def test_urls_lose_their_credentials_and_secret_query_values() -> None:
    from broker.logging import redact_url, redact_urls

    assert redact_url("http://crm:s3cret@crm.example:8443/hook?api_key=abc&ref=7") == \
        "http://crm.example:8443/hook?api_key=[redacted]&ref=7"
    assert redact_url("https://lob.example/x") == "https://lob.example/x"
    assert redact_urls("HTTP 500 from http://u:p@h/x?token=t, then amqp://guest:guest@127.0.0.1:5672//") == \
        "HTTP 500 from http://h/x?token=[redacted], then amqp://127.0.0.1:5672//"
