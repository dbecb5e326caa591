"""Confirm and Uniform against the contract kit, each against its simulator in both profiles: lenient (what the
adapter finds easiest) and strict (only what the product's documentation promises)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import yaml

from adapters.common.soap import soap_fault
from adapters.confirm.adapter import ConfirmAdapter
from adapters.confirm.sandbox import ConfirmSandbox
from adapters.uniform.adapter import UniformAdapter
from adapters.uniform.sandbox import UniformSandbox
from broker.sdk import Sandbox
from broker.testing import (
    AdapterContract,
    CoreContract,
    CreateContract,
    Lob,
    LookupContract,
    PollContract,
    RawAnswer,
    ReconcileContract,
    UpdateContract,
)

REPO = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).parent / "golden"


def shipped_mapping(name: str) -> dict[str, Any]:
    mapping: dict[str, Any] = yaml.safe_load((REPO / "mappings" / f"{name}.yaml").read_text())
    return mapping


class Confirm(AdapterContract):
    adapter_class = ConfirmAdapter
    adapter_name = "confirm"
    profile: ClassVar[str] = "lenient"
    golden_headers = ("Content-Type", "SOAPAction")

    def sandbox(self) -> Sandbox:
        return ConfirmSandbox(profile="strict" if self.profile == "strict" else "lenient")

    def settings(self, lob: Lob) -> dict[str, Any]:
        return {"url": lob.url, "username": "casebridge", "password_env": "CASEBRIDGE_CONFIRM_PASSWORD",
                "database_id": "DEMO", "timeout_seconds": lob.timeout_seconds,
                "lookup_timeout_seconds": lob.timeout_seconds * 5, "publish_notes": True}

    def mapping(self) -> dict[str, Any]:
        return shipped_mapping("confirm")

    def refused_answer(self) -> RawAnswer:
        # Confirm's in-band refusal: an HTTP 200 whose Response holds a Fault (the wording is Confirm's own).
        body = (b'<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/'
                b'envelope/"><soap:Body><ProcessOperationsResponse xmlns="http://www.confirm.co.uk/schema/am/'
                b'connector/webservice"><ProcessOperationsResult><Response><Fault><Reason>Validate enquiry.1001.'
                b'Subject code POT is not valid for service HW</Reason></Fault></Response></ProcessOperationsResult>'
                b'</ProcessOperationsResponse></soap:Body></soap:Envelope>')
        return RawAnswer(200, (("Content-Type", "text/xml; charset=utf-8"),), body)


class StrictConfirm(Confirm):
    profile = "strict"


class TestConfirmCore(Confirm, CoreContract):
    golden_dir = GOLDEN / "confirm"


class TestConfirmCreate(Confirm, CreateContract): ...


class TestConfirmLookup(Confirm, LookupContract): ...


class TestConfirmReconcile(Confirm, ReconcileContract): ...


class TestConfirmUpdate(Confirm, UpdateContract): ...


class TestConfirmPoll(Confirm, PollContract): ...


class TestStrictConfirmCore(StrictConfirm, CoreContract): ...


class TestStrictConfirmLookup(StrictConfirm, LookupContract): ...


class TestStrictConfirmReconcile(StrictConfirm, ReconcileContract): ...


class TestStrictConfirmPoll(StrictConfirm, PollContract): ...


class Uniform(AdapterContract):
    adapter_class = UniformAdapter
    adapter_name = "uniform"
    service_code = "environment.noise"
    profile: ClassVar[str] = "lenient"
    golden_headers = ("Content-Type", "SOAPAction")

    def sandbox(self) -> Sandbox:
        return UniformSandbox(profile="strict" if self.profile == "strict" else "lenient")

    def settings(self, lob: Lob) -> dict[str, Any]:
        return {"url": lob.url, "username": "casebridge", "password_env": "CASEBRIDGE_UNIFORM_PASSWORD",
                "database_id": "DEMO", "timeout_seconds": lob.timeout_seconds,
                "lookup_timeout_seconds": lob.timeout_seconds * 5}

    def mapping(self) -> dict[str, Any]:
        return shipped_mapping("uniform")

    def refused_answer(self) -> RawAnswer:
        # Uniform's in-band refusal: TransactionSuccess false inside an HTTP 200.
        body = (b'<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/'
                b'envelope/"><soap:Body><SubmitGeneralServiceRequestResponse xmlns="http://www.caps-solutions.co.uk/'
                b'webservices/connectors/731b/servicerequest"><SubmitGeneralServiceRequestResult>'
                b'<TransactionSuccess>False</TransactionSuccess><TransactionMessages><TransactionMessage>'
                b'<MessageBrief>ComplaintType NOISE is not a valid code</MessageBrief></TransactionMessage>'
                b'</TransactionMessages></SubmitGeneralServiceRequestResult></SubmitGeneralServiceRequestResponse>'
                b'</soap:Body></soap:Envelope>')
        return RawAnswer(200, (("Content-Type", "text/xml; charset=utf-8"),), body)


class StrictUniform(Uniform):
    profile = "strict"


class TestUniformCore(Uniform, CoreContract):
    golden_dir = GOLDEN / "uniform"


class TestUniformCreate(Uniform, CreateContract): ...


class TestUniformLookup(Uniform, LookupContract): ...


class TestUniformPoll(Uniform, PollContract): ...


class TestStrictUniformCore(StrictUniform, CoreContract): ...


class TestStrictUniformLookup(StrictUniform, LookupContract): ...


class TestStrictUniformPoll(StrictUniform, PollContract): ...


assert soap_fault  # the shared fault builder the simulators answer with
