"""The adapter contract suites: one abstract class per capability, which an adapter's tests subclass.

An adapter's test module names the adapter and how to reach its LOB system once, in a class of its own, then
subclasses that with each suite it must pass::

    class Alloy(AdapterContract):
        adapter = AlloyAdapter
        adapter_name = "alloy"
        def sandbox(self) -> Sandbox: return AlloySandbox()
        def settings(self, lob: Lob) -> dict[str, Any]: return {"url": lob.url, ...}
        def mapping(self) -> dict[str, Any]: return {...}

    class TestAlloyCore(Alloy, CoreContract): ...
    class TestAlloyCreate(Alloy, CreateContract): ...

The adapter is driven through a fault-injecting proxy (:mod:`broker.testing.proxy`) in front of the sandbox, or in
front of a real LOB test system when ``--real`` is given (``CASEBRIDGE_CONTRACT_REAL=1``), so every check is made
against the author's adapter and a system that really acts on its requests.

**Strictness.** :class:`CoreContract` holds every adapter to the capabilities it declares: each one is proven by its
suite, subclassed in the same module, or carries a written reason in ``bypass_reasons``
(``{Capability.batch_export: "files are written by the core"}``). Set ``strict = False`` to turn that into a
warning while an adapter is being written.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import sys
import threading
import warnings
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import pytest
import yaml

from broker.errors import (
    DeliveryError,
    DeliveryUnconfirmed,
    PermanentDeliveryError,
    Severity,
    TransientDeliveryError,
)
from broker.model.events import AnyEvent, CaseCreated
from broker.plugins import registry
from broker.plugins.contract import Adapter, Capability, DeliveryOutcome, DeliveryRequest, LobStatusChange, Sandbox
from broker.plugins.registry import available_adapters, register_adapter
from broker.testing import events
from broker.testing.proxy import Exchange, FaultProxy, RawAnswer

#: The capabilities no suite can prove through an adapter (files are written and read by the core).
NO_SUITE = frozenset({Capability.batch_export, Capability.batch_import})
_READABLE_REASON = "a machine-readable reason: lower case, digits and underscores"


@runtime_checkable
class Inspectable(Protocol):
    """A sandbox that can say which records carry our reference: how the kit counts what the adapter made."""

    def records_for(self, our_reference: str) -> list[str]: ...


@dataclass
class Lob:
    """The LOB system as one test sees it: ``url`` goes through the test's fault proxy."""

    url: str
    direct_url: str
    proxy: FaultProxy
    environment: dict[str, str]
    timeout_seconds: float
    sandbox: Sandbox | None


def real_requested(config: pytest.Config | None = None) -> bool:
    """``--real`` on the command line, or ``CASEBRIDGE_CONTRACT_REAL=1``: run against a real LOB test system."""
    if os.environ.get("CASEBRIDGE_CONTRACT_REAL", "") in ("1", "true", "yes"):
        return True
    return bool(config is not None and config.getoption("--real", default=False))


def canonical_json(value: Any) -> str:
    """How results are kept in golden files: sorted keys, two-space indents, a final newline."""
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n"


def describe(result: DeliveryOutcome | Sequence[LobStatusChange] | DeliveryError | None) -> Any:
    """A canonical result as plain data, for golden files."""
    if result is None:
        return None
    if isinstance(result, DeliveryOutcome):
        return {"external_ref": result.external_ref, "detail": result.detail}
    if isinstance(result, DeliveryError):
        kind = "permanent" if isinstance(result, PermanentDeliveryError) else \
            "unconfirmed" if isinstance(result, DeliveryUnconfirmed) else "transient"
        described: dict[str, Any] = {"error": kind, "reason": result.reason, "message": result.message}
        if isinstance(result, TransientDeliveryError):
            described["may_have_landed"] = result.may_have_landed
            described["retry_after"] = result.retry_after
        return described
    return [{"reference": change.reference, "update_id": change.update_id, "status": change.status.value,
             "external_status_code": change.external_status_code, "occurred_at": change.occurred_at.isoformat(),
             "notes": change.notes} for change in result]


class AdapterContract:
    """What every suite needs to know about the adapter under test. Subclass it once per adapter."""

    #: The adapter class under test.
    adapter_class: ClassVar[type[Adapter[Any]]]
    #: Its name in the ``casebridge.adapters`` entry point group (registered for the test if not installed).
    adapter_name: ClassVar[str]
    #: The target's name in the configurations the kit writes.
    target: ClassVar[str] = "lob"
    #: A canonical service code the mapping maps: the cases the kit creates are for it.
    service_code: ClassVar[str] = "highways.pothole"
    #: The timeout the adapter is given (``settings()`` must pass ``lob.timeout_seconds`` on); the kit withholds an
    #: answer longer than this to make a timeout.
    timeout_seconds: ClassVar[float] = 1.0
    #: Capability (or suite name) -> why it is not proven here, in words a reviewer accepts.
    bypass_reasons: ClassVar[dict[Capability | str, str]] = {}
    #: Hold every declared capability to its suite (False: warn instead, while the adapter is being written).
    strict: ClassVar[bool] = True
    #: The folder of golden cases (one folder per case, see :class:`GoldenContract`).
    golden_dir: ClassVar[Path | None] = None
    #: Request headers compared byte for byte in golden files, beside the request line and body.
    golden_headers: ClassVar[tuple[str, ...]] = ("Content-Type",)

    # -- hooks the author writes -------------------------------------------------------------------------------

    def sandbox(self) -> Sandbox:
        """A new, not yet started stand-in for the LOB system (the adapter's simulator)."""
        raise NotImplementedError(f"{type(self).__name__} must say how to start its sandbox: def sandbox(self)")

    def settings(self, lob: Lob) -> dict[str, Any]:
        """The target's settings, as routes.yaml would give them, pointed at ``lob.url`` with
        ``lob.timeout_seconds``."""
        raise NotImplementedError(f"{type(self).__name__} must give the target's settings: def settings(self, lob)")

    def mapping(self) -> dict[str, Any]:
        """The target's mapping file, as a dictionary; it must map :attr:`service_code`."""
        return {}

    def real_lob(self) -> tuple[str, dict[str, str]]:
        """With ``--real``: the URL of a real LOB test system and the environment its settings read (its
        credentials). By default from ``CASEBRIDGE_CONTRACT_REAL_URL``; without it the tests are skipped."""
        url = os.environ.get("CASEBRIDGE_CONTRACT_REAL_URL")
        if not url:
            pytest.skip("--real needs CASEBRIDGE_CONTRACT_REAL_URL (and the credentials the settings read)")
        return url, {}

    def refused_answer(self) -> RawAnswer | None:
        """An answer by which the LOB system refuses a create in band (a fault inside an HTTP 200, an error
        document), exactly as the product sends it; None if the product has no such answer."""
        return None

    def new_case(self, **case_fields: Any) -> CaseCreated:
        event = events.case_created(service_code=self.service_code, **case_fields)
        assert isinstance(event, CaseCreated)
        return event

    def records_for(self, lob: Lob, our_reference: str) -> list[str]:
        """The LOB system's references of the records carrying our reference (by default the sandbox's own
        account, when it offers :class:`Inspectable`)."""
        if isinstance(lob.sandbox, Inspectable):
            return lob.sandbox.records_for(our_reference)
        pytest.skip("the sandbox cannot list its records (Inspectable) and no records_for() was given")

    def move_on(self, lob: Lob, reference: str) -> None:
        """Have an officer change the record's status in the LOB system (by default, the sandbox's officer)."""
        if lob.sandbox is None:
            pytest.skip("with a real system, move_on() must say how a record's status is changed")
        moved = lob.sandbox.officer_moves()
        assert moved, "the sandbox's officer moved nothing on"

    # -- fixtures ------------------------------------------------------------------------------------------------

    @pytest.fixture(scope="class")
    @classmethod
    def _lob_service(cls, request: pytest.FixtureRequest) -> Iterator[tuple[str, dict[str, str], Sandbox | None]]:
        self = cls()
        registered = self._register()
        if real_requested(request.config):
            url, environment = self.real_lob()
            yield url, environment, None
        else:
            sandbox = self.sandbox()
            sandbox.start("127.0.0.1", 0)
            try:
                yield sandbox.url, sandbox.environment(), sandbox
            finally:
                sandbox.close()
        if registered:
            register_adapter(self.adapter_name, None)

    @pytest.fixture
    def lob(self, _lob_service: tuple[str, dict[str, str], Sandbox | None],
            monkeypatch: pytest.MonkeyPatch) -> Iterator[Lob]:
        url, environment, sandbox = _lob_service
        for name, value in environment.items():
            monkeypatch.setenv(name, value)
        proxy = FaultProxy(url)
        try:
            yield Lob(proxy.url, url, proxy, environment, self.timeout_seconds, sandbox)
        finally:
            proxy.close()

    @pytest.fixture
    def adapter(self, lob: Lob) -> Iterator[Adapter[Any]]:
        built = self.make_adapter(lob)
        try:
            yield built
        finally:
            built.close()

    def make_adapter(self, lob: Lob) -> Adapter[Any]:
        return self.adapter_class(self.target, self.settings(lob), self.mapping())

    def _register(self) -> bool:
        """Make the adapter known by name for ``broker check`` if no installed package names it."""
        if self.adapter_name in available_adapters():
            return False
        register_adapter(self.adapter_name, self.adapter_class)
        return True

    # -- helpers the suites share --------------------------------------------------------------------------------

    def request_for(self, event: AnyEvent, *, external_ref: str | None = None, attempt: int = 1,
                    first_attempt_at: datetime | None = None) -> DeliveryRequest:
        return DeliveryRequest(target=self.target, event=event, our_reference=f"CB-{event.case_id}",
                               external_ref=external_ref, attempt=attempt,
                               first_attempt_at=first_attempt_at or datetime.now(UTC))

    def created(self, adapter: Adapter[Any], lob: Lob) -> tuple[DeliveryRequest, DeliveryOutcome]:
        """A new case, delivered: its request and outcome."""
        sent = self.request_for(self.new_case())
        return sent, adapter.deliver(sent)

    def landed_then_timed_out(self, adapter: Adapter[Any], lob: Lob) -> DeliveryRequest:
        """A create that reached the LOB system and was acted on, whose answer never came: the adapter must say it
        is transient and may have landed."""
        self.created(adapter, lob)  # the session (if any) is open: the next request is the create itself
        sent = self.request_for(self.new_case())
        lob.proxy.withhold_next(self.timeout_seconds * 3 + 2)
        with pytest.raises(TransientDeliveryError) as raised:
            adapter.deliver(sent)
        assert raised.value.may_have_landed, "a timeout after the request was sent may have landed"
        lob.proxy.clear()
        return replace(sent, attempt=2)

    @staticmethod
    def assert_readable(error: DeliveryError) -> None:
        assert error.reason and error.reason.replace("_", "").isalnum() and error.reason.islower(), \
            f"{error.reason!r} is not {_READABLE_REASON}"
        assert error.message.strip(), "an error needs a message a support officer can read"
        assert "Traceback" not in error.message


class CoreContract(AdapterContract):
    """What every adapter proves: errors classified, settings and mapping checked per field, close twice,
    threads, golden files, and each declared capability proven by its suite or bypassed in writing."""

    def test_each_declared_capability_is_proven_or_bypassed(self) -> None:
        module = sys.modules[type(self).__module__]
        proven = {value.capability for value in vars(module).values()
                  if isinstance(value, type) and issubclass(value, CapabilitySuite)
                  and value.__name__.startswith("Test")
                  and getattr(value, "adapter_class", None) is self.adapter_class}
        missing = []
        for capability in sorted(self.adapter_class.capabilities):
            if capability in proven:
                continue
            reason = self.bypass_reasons.get(capability, "").strip()
            if capability in NO_SUITE and reason:
                continue
            if not reason:
                missing.append(capability.value)
        message = (f"{self.adapter_class.__name__} declares {', '.join(missing)} but no suite proves it here: subclass "
                   f"{', '.join(_SUITE_NAMES.get(name, '?') for name in missing)} or give bypass_reasons")
        if missing and self.strict:
            pytest.fail(message)
        elif missing:
            warnings.warn(message, stacklevel=1)

    def test_a_refused_connection_is_transient_and_cannot_have_landed(self, lob: Lob) -> None:
        with socket.socket() as unused:
            unused.bind(("127.0.0.1", 0))
            port = unused.getsockname()[1]
        closed = replace(lob, url=lob.url.replace(lob.proxy.url.split("/")[2], f"127.0.0.1:{port}", 1))
        adapter = self.make_adapter(closed)
        try:
            with pytest.raises(TransientDeliveryError) as raised:
                adapter.deliver(self.request_for(self.new_case()))
        finally:
            adapter.close()
        assert not raised.value.may_have_landed, "nothing was sent: it cannot have landed"
        self.assert_readable(raised.value)

    def test_a_dropped_connection_is_transient(self, adapter: Adapter[Any], lob: Lob) -> None:
        self.created(adapter, lob)
        lob.proxy.drop_next()
        with pytest.raises(TransientDeliveryError) as raised:
            adapter.deliver(self.request_for(self.new_case()))
        self.assert_readable(raised.value)

    def test_a_timeout_after_the_lob_acted_is_transient_and_may_have_landed(self, adapter: Adapter[Any],
                                                                            lob: Lob) -> None:
        self.landed_then_timed_out(adapter, lob)

    @pytest.mark.parametrize("status", [500, 502, 503, 504])
    def test_5xx_is_transient(self, adapter: Adapter[Any], lob: Lob, status: int) -> None:
        self.created(adapter, lob)
        lob.proxy.answer_next(status, b"Service Unavailable", ("Content-Type", "text/plain"))
        with pytest.raises(TransientDeliveryError) as raised:
            adapter.deliver(self.request_for(self.new_case()))
        self.assert_readable(raised.value)
        if status == 503:
            assert not raised.value.may_have_landed, "a 503 turns the request away before any work"

    def test_429_is_transient_and_its_retry_after_honoured(self, adapter: Adapter[Any], lob: Lob) -> None:
        self.created(adapter, lob)
        lob.proxy.answer_next(429, b"Too Many Requests", ("Content-Type", "text/plain"), ("Retry-After", "7"))
        with pytest.raises(TransientDeliveryError) as raised:
            adapter.deliver(self.request_for(self.new_case()))
        assert raised.value.retry_after == 7.0, "Retry-After: 7 must become retry_after=7"
        assert not raised.value.may_have_landed, "a 429 turns the request away before any work"

    @pytest.mark.parametrize("status", [400, 404, 422])
    def test_4xx_is_permanent_with_a_readable_reason(self, adapter: Adapter[Any], lob: Lob, status: int) -> None:
        self.created(adapter, lob)
        lob.proxy.answer_next(status, b'{"error": "refused"}', ("Content-Type", "application/json"))
        with pytest.raises(PermanentDeliveryError) as raised:
            adapter.deliver(self.request_for(self.new_case()))
        self.assert_readable(raised.value)

    def test_an_in_band_refusal_is_permanent_with_a_readable_reason(self, adapter: Adapter[Any],
                                                                    lob: Lob) -> None:
        answer = self.refused_answer()
        if answer is None:
            pytest.skip("refused_answer(): this LOB system refuses only with HTTP statuses")
        self.created(adapter, lob)
        lob.proxy.give_next(answer)
        with pytest.raises(PermanentDeliveryError) as raised:
            adapter.deliver(self.request_for(self.new_case()))
        self.assert_readable(raised.value)

    # -- settings and mapping, through broker check ------------------------------------------------------------

    def _check(self, lob: Lob, tmp_path: Path, settings: dict[str, Any],
               mapping: dict[str, Any]) -> list[tuple[str, int | None, str]]:
        from broker.config.check import check_mappings

        folder = tmp_path / "mappings"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        (folder / "services.yaml").write_text(yaml.safe_dump(
            {"services": {self.service_code: {"name": "The service the contract kit creates cases for"}}}))
        (folder / "routes.yaml").write_text(yaml.safe_dump({
            "targets": {self.target: {"adapter": self.adapter_name, "settings": settings}},
            "routes": [{"name": "the kit's route", "services": [self.service_code],
                        "events": ["case.created"], "deliver": [{"target": self.target}]}],
        }, sort_keys=False))
        (folder / f"{self.target}.yaml").write_text(yaml.safe_dump(mapping, sort_keys=False) if mapping else "{}\n")
        _configuration, problems = check_mappings(folder)
        return [(Path(problem.file).name, problem.line, problem.message) for problem in problems
                if problem.severity is Severity.error]

    def test_valid_settings_and_mapping_pass_broker_check(self, lob: Lob, tmp_path: Path) -> None:
        assert self._check(lob, tmp_path, self.settings(lob), self.mapping()) == []

    def test_invalid_settings_are_refused_per_field_with_their_line(self, lob: Lob, tmp_path: Path) -> None:
        settings = self.settings(lob)
        problems = self._check(lob, tmp_path, {**settings, "no_such_setting": 1}, self.mapping())
        assert any(file == "routes.yaml" and line and "settings.no_such_setting" in message
                   for file, line, message in problems), f"an unknown setting must be refused: {problems}"
        for name, field in self.adapter_class.config_model.model_fields.items():
            if not field.is_required() or name not in settings:
                continue
            without = {key: value for key, value in settings.items() if key != name}
            problems = self._check(lob, tmp_path, without, self.mapping())
            assert any(file == "routes.yaml" and line and f"settings.{name}" in message
                       for file, line, message in problems), f"a missing {name} must be named: {problems}"

    def test_an_invalid_mapping_is_refused_per_field_with_its_line(self, lob: Lob, tmp_path: Path) -> None:
        mapping = self.mapping()
        problems = self._check(lob, tmp_path, self.settings(lob), {**mapping, "no_such_key": 1})
        mapping_file = f"{self.target}.yaml"
        assert any(file == mapping_file and line and "no_such_key" in message for file, line, message in problems), \
            f"an unknown mapping key must be refused with the mapping file's line: {problems}"
        for name, field in self.adapter_class.mapping_model.model_fields.items():
            if not field.is_required() or name not in mapping:
                continue
            without = {key: value for key, value in mapping.items() if key != name}
            problems = self._check(lob, tmp_path, self.settings(lob), without)
            assert any(file == mapping_file and name in message for file, _line, message in problems), \
                f"a missing {name} must be named: {problems}"

    # -- lifecycle -------------------------------------------------------------------------------------------------

    def test_close_is_safe_twice(self, lob: Lob) -> None:
        adapter = self.make_adapter(lob)
        self.created(adapter, lob)
        adapter.close()
        adapter.close()

    def test_the_adapter_is_safe_to_call_from_several_threads(self, adapter: Adapter[Any], lob: Lob) -> None:
        failures: list[BaseException] = []
        made: dict[str, str | None] = {}
        lock = threading.Lock()

        def deliver_some() -> None:
            try:
                for _ in range(3):
                    sent = self.request_for(self.new_case())
                    outcome = adapter.deliver(sent)
                    with lock:
                        made[sent.our_reference] = outcome.external_ref
                if Capability.poll_updates in adapter.capabilities:
                    now = datetime.now(UTC)
                    adapter.status_changes(now - timedelta(minutes=5), now)
            except BaseException as exc:
                failures.append(exc)

        threads = [threading.Thread(target=deliver_some) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert failures == []
        assert len(made) == 18
        references = [reference for reference in made.values() if reference is not None]
        assert len(set(references)) == len(references), "two cases were given one LOB record"
        for our_reference, reference in made.items():
            found = self.records_for(lob, our_reference)
            assert len(found) == 1 and (reference is None or found == [reference]), (our_reference, found)

    # -- golden files ------------------------------------------------------------------------------------------

    def test_golden_files(self, lob: Lob, request: pytest.FixtureRequest) -> None:
        """Each folder under ``golden_dir`` holds ``call.json`` (what to ask the adapter), ``exchange-N.request``
        (what the adapter must send, byte for byte: request line, ``golden_headers``, body), ``exchange-N.response``
        (what the LOB system answers) and ``result.json`` (the canonical result). ``--update-golden`` records the
        requests and the result afresh; the answers too, against the sandbox, where there are none yet (delete them
        to record them again; edit them to play an answer the product documents)."""
        if self.golden_dir is None or not any(self.golden_dir.glob("*/call.json")):
            pytest.skip("no golden files (golden_dir)")
        update = bool(request.config.getoption("--update-golden", default=False))
        mismatches = []
        for case in sorted(path.parent for path in self.golden_dir.glob("*/call.json")):
            mismatches += self._golden_case(case, lob, update=update)
        assert mismatches == [], "\n\n".join(mismatches)

    def _golden_case(self, case: Path, lob: Lob, *, update: bool) -> list[str]:
        call = json.loads((case / "call.json").read_text())
        answers = sorted(case.glob("exchange-*.response"), key=lambda path: int(path.name.split("-")[1]
                                                                                  .split(".")[0]))
        if answers:  # the LOB system's answers, as recorded or as written from its documentation
            lob.proxy.script = deque(RawAnswer.from_text(path.read_bytes()) for path in answers)
        elif update:  # none yet: record the sandbox's
            lob.proxy.script = None
            self._golden_setup(call, lob)
            (case / "call.json").write_text(json.dumps(call, indent=2) + "\n")
        else:
            return [f"{case.name}: no exchange-N.response files (run with --update-golden to record them)"]
        lob.proxy.exchanges.clear()
        adapter = self.make_adapter(lob)
        try:
            result = describe(self._golden_call(adapter, call))
        finally:
            adapter.close()
            lob.proxy.script = None
        exchanges = list(lob.proxy.exchanges)
        origin = "/".join(lob.proxy.url.split("/")[:3]).encode()  # a port of the moment: written as {lob}
        written = {f"exchange-{number}.request": self._request_text(exchange).replace(origin, b"{lob}")
                   for number, exchange in enumerate(exchanges, 1)}
        written["result.json"] = canonical_json(result).encode().replace(origin, b"{lob}")
        if update:
            for number, exchange in enumerate(exchanges, 1):
                if exchange.answer is not None and not answers:
                    (case / f"exchange-{number}.response").write_bytes(exchange.answer.to_text())
            for name, data in written.items():
                (case / name).write_bytes(data)
            return []
        mismatches = []
        for name, data in written.items():
            path = case / name
            if not path.exists():
                mismatches.append(f"{case.name}: {name} was not expected (run with --update-golden to record)")
            elif path.read_bytes() != data:
                mismatches.append(f"{case.name}/{name} differs:\n--- expected\n"
                                  f"{path.read_bytes().decode(errors='replace')}\n--- got\n"
                                  f"{data.decode(errors='replace')}")
        for path in case.glob("exchange-*.request"):
            if path.name not in written:
                mismatches.append(f"{case.name}: the adapter did not send {path.name}")
        return mismatches

    def _golden_setup(self, call: dict[str, Any], lob: Lob) -> None:
        """Before recording: deliver the cases the call needs (``before``), and move them on (``moves``)."""
        if not call.get("before"):
            return
        adapter = self.make_adapter(lob)
        try:
            for step in call["before"]:
                event = events.case_created(**step) if isinstance(step, dict) else self.new_case()
                adapter.deliver(self.request_for(event))
            for _ in range(int(call.get("moves", 0))):
                if lob.sandbox is not None:
                    lob.sandbox.officer_moves()
        finally:
            adapter.close()
        now = datetime.now(UTC)
        window = call.get("window_minutes", [60, 1])
        call["since"] = (now - timedelta(minutes=window[0])).isoformat()
        call["until"] = (now + timedelta(minutes=window[1])).isoformat()

    def _golden_call(self, adapter: Adapter[Any], call: dict[str, Any]) -> Any:
        try:
            if call["call"] == "status_changes":
                return adapter.status_changes(datetime.fromisoformat(call["since"]),
                                              datetime.fromisoformat(call["until"]))
            from broker.model.events import EVENT_ADAPTER

            event = EVENT_ADAPTER.validate_python(call["event"])
            sent = DeliveryRequest(target=self.target, event=event, our_reference=call["our_reference"],
                                   external_ref=call.get("external_ref"), attempt=call.get("attempt", 1),
                                   first_attempt_at=datetime.fromisoformat(call.get("first_attempt_at",
                                                                                    event.occurred_at.isoformat())))
            if call["call"] == "find_delivered":
                return adapter.find_delivered(sent)
            return adapter.deliver(sent)
        except DeliveryError as error:
            return error

    def _request_text(self, exchange: Exchange) -> bytes:
        wanted = [name.lower() for name in self.golden_headers]
        lines = [f"{exchange.method} {exchange.path}"]
        lines += [f"{name}: {value}" for name, value in exchange.headers if name.lower() in wanted]
        return ("\n".join(lines) + "\n\n").encode("latin-1") + exchange.body


class CapabilitySuite(AdapterContract):
    """A suite proving one capability."""

    capability: ClassVar[Capability]

    @pytest.fixture(autouse=True)
    def _declared(self) -> None:
        if self.capability not in self.adapter_class.capabilities:
            pytest.fail(f"{self.adapter_class.__name__} does not declare {self.capability.value}, "
                        "yet subclasses its suite")


class CreateContract(CapabilitySuite):
    """``Capability.create``: a new case makes one record, and its reference comes back."""

    capability = Capability.create

    def test_a_new_case_makes_one_record(self, adapter: Adapter[Any], lob: Lob) -> None:
        sent, outcome = self.created(adapter, lob)
        found = self.records_for(lob, sent.our_reference)
        assert len(found) == 1, found
        assert outcome.external_ref in (None, found[0])


class LookupContract(CapabilitySuite):
    """``Capability.lookup``: query-before-create. The same event delivered twice — a timeout after the LOB system
    committed, then a retry — leaves one record, because :meth:`Adapter.find_delivered` finds the first."""

    capability = Capability.lookup

    def test_the_same_event_twice_leaves_one_record(self, adapter: Adapter[Any], lob: Lob) -> None:
        retry = self.landed_then_timed_out(adapter, lob)
        try:
            found = adapter.find_delivered(retry)
        except DeliveryUnconfirmed:
            assert Capability.reconcile in adapter.capabilities, \
                "find_delivered said it cannot tell, and the adapter cannot reconcile either"
            found = adapter.reconcile([retry]).get(retry.our_reference)
        assert found is not None, "the first attempt landed: find_delivered must find it, not ask for a second"
        records = self.records_for(lob, retry.our_reference)
        assert len(records) == 1, records
        assert found.external_ref == records[0]

    def test_a_delivery_that_never_landed_is_not_found(self, adapter: Adapter[Any], lob: Lob) -> None:
        sent = self.request_for(self.new_case(), attempt=2)
        try:
            found = adapter.find_delivered(sent)
        except DeliveryUnconfirmed:
            if Capability.reconcile not in adapter.capabilities:
                raise
            found = adapter.reconcile([sent]).get(sent.our_reference)
        assert found is None, "nothing was made: the look-up must say so"
        adapter.deliver(sent)
        assert len(self.records_for(lob, sent.our_reference)) == 1

    def test_a_look_up_that_fails_is_transient_never_not_found(self, adapter: Adapter[Any], lob: Lob) -> None:
        self.created(adapter, lob)
        sent = self.request_for(self.new_case(), attempt=2)
        lob.proxy.answer_next(500, b"Internal Server Error", ("Content-Type", "text/plain"))
        try:
            adapter.find_delivered(sent)
        except (TransientDeliveryError, DeliveryUnconfirmed):
            return
        assert lob.proxy.faults, "the look-up failed, yet find_delivered answered as if it had not: a create " \
                                 "could follow"


class ReconcileContract(CapabilitySuite):
    """``Capability.reconcile``: a create nobody could confirm is found by searching the LOB system."""

    capability = Capability.reconcile

    def test_an_unconfirmed_create_is_found(self, adapter: Adapter[Any], lob: Lob) -> None:
        retry = self.landed_then_timed_out(adapter, lob)
        found = adapter.reconcile([retry])
        records = self.records_for(lob, retry.our_reference)
        assert list(found) == [retry.our_reference] and [found[retry.our_reference].external_ref] == records

    def test_a_create_that_never_landed_is_not_found(self, adapter: Adapter[Any], lob: Lob) -> None:
        assert adapter.reconcile([self.request_for(self.new_case(), attempt=2)]) == {}


class UpdateContract(CapabilitySuite):
    """``Capability.update``: follow-ups reach the record the create made, and make no record of their own."""

    capability = Capability.update

    def test_follow_ups_reach_the_record_made(self, adapter: Adapter[Any], lob: Lob) -> None:
        sent, outcome = self.created(adapter, lob)
        reference = outcome.external_ref
        for follow_up in (events.note_added(sent.event.case_id, "Crew booked for Tuesday"),
                          events.status_changed(sent.event.case_id, "in_progress", reason="Crew on site")):
            answered = adapter.deliver(self.request_for(follow_up, external_ref=reference))
            assert answered.external_ref in (None, reference)
        assert len(self.records_for(lob, sent.our_reference)) == 1


class PollContract(CapabilitySuite):
    """``Capability.poll_updates``: status changes come back once each, however the windows fall."""

    capability = Capability.poll_updates

    def _ours(self, changes: Sequence[LobStatusChange], reference: str | None) -> list[LobStatusChange]:
        return [change for change in changes if change.reference == reference]

    def test_a_new_record_is_not_news(self, adapter: Adapter[Any], lob: Lob) -> None:
        started = datetime.now(UTC) - timedelta(minutes=1)
        _sent, outcome = self.created(adapter, lob)
        changes = self._ours(adapter.status_changes(started, datetime.now(UTC) + timedelta(minutes=1)),
                             outcome.external_ref)
        own = outcome.detail.get("lob_update_id")
        assert [change.update_id for change in changes if change.update_id != own] == [], \
            "the record's first state is ours: it must not come back as a status change (or say lob_update_id)"

    def test_polling_on_from_the_cursor_never_repeats_an_update(self, adapter: Adapter[Any], lob: Lob) -> None:
        started = datetime.now(UTC) - timedelta(minutes=1)
        _sent, outcome = self.created(adapter, lob)
        own = outcome.detail.get("lob_update_id")
        self.move_on(lob, str(outcome.external_ref))
        cursor = datetime.now(UTC) + timedelta(seconds=1)
        first = [change for change in self._ours(adapter.status_changes(started, cursor), outcome.external_ref)
                 if change.update_id != own]
        assert first, "an officer moved the record on: the poll must report it"
        self.move_on(lob, str(outcome.external_ref))
        later = datetime.now(UTC) + timedelta(minutes=1)
        second = [change for change in self._ours(adapter.status_changes(cursor, later), outcome.external_ref)
                  if change.update_id != own]
        seen = {change.update_id: change for change in first}
        for change in second:
            if change.update_id in seen:  # the same update again: only as the same update, which the core drops
                assert (seen[change.update_id].status, seen[change.update_id].reference) == \
                    (change.status, change.reference)
        assert len({change.update_id for change in first + second}) == len({
            (change.status, change.external_status_code) for change in first + second}), \
            "one update reported under two ids would reach the CRM twice"

    def test_overlapping_windows_agree_by_update_id(self, adapter: Adapter[Any], lob: Lob) -> None:
        started = datetime.now(UTC) - timedelta(minutes=1)
        _sent, outcome = self.created(adapter, lob)
        self.move_on(lob, str(outcome.external_ref))
        middle = datetime.now(UTC)
        ended = middle + timedelta(minutes=1)
        whole = {change.update_id: change for change in
                 self._ours(adapter.status_changes(started, ended), outcome.external_ref)}
        halves = {change.update_id: change for window in ((started, middle + timedelta(seconds=1)), (middle, ended))
                  for change in self._ours(adapter.status_changes(*window), outcome.external_ref)}
        assert set(halves) <= set(whole) | set(halves)
        for update_id, change in halves.items():
            if update_id in whole:  # (when it happened is the adapter's best estimate where the LOB gives no time)
                assert _what(whole[update_id]) == _what(change), "one update id must always describe the same change"
        assert set(whole) <= set(halves), "every change in the whole window is in one of its halves"

    def test_a_far_future_cursor_yields_nothing(self, adapter: Adapter[Any], lob: Lob) -> None:
        _sent, outcome = self.created(adapter, lob)
        self.move_on(lob, str(outcome.external_ref))
        future = datetime.now(UTC) + timedelta(days=30)
        assert adapter.status_changes(future, future + timedelta(days=1)) == []


def _what(change: LobStatusChange) -> tuple[str, str, str, str | None]:
    return change.reference, change.status.value, change.external_status_code, change.notes


_SUITE_NAMES = {suite.capability.value: suite.__name__
                for suite in (CreateContract, LookupContract, ReconcileContract, UpdateContract, PollContract)}


@contextlib.contextmanager
def adapter_registered(name: str, cls: type[Adapter[Any]]) -> Iterator[None]:
    """Make ``cls`` known as ``name`` for the duration (as an installed package's entry point would)."""
    known = name in available_adapters()
    if not known:
        register_adapter(name, cls)
    try:
        yield
    finally:
        if not known:
            register_adapter(name, None)
        registry.adapter_class.cache_clear()
