"""A Uniform service request connector in a box: for tests, demos and integration engineers' sandboxes.

It speaks Uniform's SOAP 1.1 (refusing SOAP 1.2), keeps cookie sessions (``LogonToConnector`` checks the
credentials and sets ``ASP.NET_SessionId``; any other call without a live session faults), expires sessions on
demand, validates codes against its code lists, assigns reference values such as ``26/00001/SR``, answers
``GetGeneralServiceRequestByReferenceValue`` (by reference value or by an alternative reference),
``GetChangedServiceRequestRefVals`` and ``GetCnCodeList``, and lets tests move a request on as an officer would.
Tests can also make it slow, drop a connection, fail or answer with an entity bomb.

The ``strict`` profile does only what Uniform's documentation promises: its search answers do not echo the
alternative references, it lacks the optional ``SRCLOSEACT`` code list, ``TransactionSuccess`` is spelt ``True``
/``False`` and a session expires after a few calls (``SESSION_CALLS``), mid-run. The ``lenient`` profile echoes
everything, has every list and keeps a session until told to expire it.

    python -m adapters.uniform.simulator --port 8027
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass, field
from datetime import datetime
from email.message import Message
from zoneinfo import ZoneInfo

from lxml import etree

from adapters.common.soap import body_content, local_name, parse_xml, soap_fault, sub, tag_name, without_namespaces
from adapters.common.soap_server import Profile, SoapReply, SoapSimulatorServer, serve_from_command_line
from adapters.uniform.soap import SESSION_COOKIE, response

LONDON = ZoneInfo("Europe/London")
NOT_LOGGED_ON = "Not logged on to the connector: the session has expired or LogonToConnector was not called"
DEFAULT_CODE_LISTS: dict[str, dict[str, str]] = {
    "SRRECTYPE": {"NOISE": "Noise nuisance", "DFOUL": "Dog fouling", "PEST": "Pests", "FLY": "Fly-tipping",
                  "FOOD": "Food hygiene complaint"},
    "SRRECHOW": {"WEB": "Website", "APP": "Mobile app", "TELE": "Telephone", "EMAIL": "Email",
                 "PERSON": "In person", "LETTER": "Letter", "CSP": "Social media"},
    "SRCUSTTYPE": {"PUBLIC": "Member of the public", "CLLR": "Councillor", "MEM_MP": "MP", "OCC": "Occupier"},
    "SRCLOSEACT": {"RESFIX": "Resolved - fixed", "DUPR": "Duplicate request", "REFER": "Referred internally",
                   "REFERE": "Referred to another body", "NFA": "No further action", "NAP": "No action possible"},
    "SRKIND": {"G": "General", "D": "Dog", "N": "Noise", "P": "Pest", "F": "Food"},
}
#: Status codes a request moves through (Uniform holds them outside the SR code lists).
STATUSES = ("1_REC", "4_INV", "8_CLO")
INITIAL_STATUS = "1_REC"
#: Code lists a Uniform may not offer through GetCnCodeList: the strict profile lacks them.
OPTIONAL_CODE_LISTS = frozenset({"SRCLOSEACT"})
#: In the strict profile a session serves this many calls after its logon, then expires.
SESSION_CALLS = 4


@dataclass
class ServiceRequest:
    reference: str
    technical_key: str
    operation: str
    complaint_type: str
    how_received: str
    fields: dict[str, str]
    alternative_references: list[tuple[str, str]]
    customers: list[dict[str, object]] = field(default_factory=list)
    xtra: dict[str, str] = field(default_factory=dict)
    status: str = INITIAL_STATUS
    closing_action: str | None = None
    last_updated: datetime = field(default_factory=lambda: _now())


class _Refused(Exception):
    """TransactionSuccess false, with this MessageBrief."""


class _Fault(Exception):
    """A SOAP fault, with this faultstring."""


class UniformSimulator(SoapSimulatorServer):
    path = "/ServiceRequestConnector.asmx"

    def __init__(self, *, username: str = "casebridge", password: str = "secret", database_id: str = "DEMO",
                 host: str = "127.0.0.1", port: int = 0, profile: Profile = "lenient", first_number: int = 1) -> None:
        self.credentials = (database_id, username, password)
        self.profile: Profile = profile
        self.code_lists = {name: dict(codes) for name, codes in DEFAULT_CODE_LISTS.items()}
        #: Code lists GetCnCodeList does not offer (Uniform still knows their codes).
        self.missing_code_lists: set[str] = set(OPTIONAL_CODE_LISTS) if profile == "strict" else set()
        #: Calls a session may still serve before it expires (strict), by session.
        self.session_calls: int | None = SESSION_CALLS if profile == "strict" else None
        self.requests: dict[str, ServiceRequest] = {}
        self.calls: list[str] = []  # the operation of every call, in order
        self.sessions: dict[str, int] = {}  # live session -> calls it has served
        self.logons = 0
        self.logoffs = 0
        #: Sessions this Uniform ended by itself, mid-run (strict), as opposed to ``expire_sessions``.
        self.expired_by_server = 0
        self._next_number = first_number
        self._lock = threading.RLock()
        super().__init__(host=host, port=port, name="uniform-simulator")

    # -- controls for tests and demos ------------------------------------------------------------------------------

    def expire_sessions(self) -> None:
        """Every session ends, as when Uniform's session timeout passes or its application pool restarts."""
        with self._lock:
            self.sessions.clear()

    def officer_sets_status(self, reference: str, status: str, closing_action: str | None = None) -> None:
        """An officer moves the request on in Uniform; GetChangedServiceRequestRefVals will report it."""
        with self._lock:
            if status not in STATUSES:
                raise ValueError(f"unknown status {status!r}")
            if closing_action is not None and closing_action not in self.code_lists["SRCLOSEACT"]:
                raise ValueError(f"unknown closing action {closing_action!r}")
            request = self.requests[reference]
            request.status, request.closing_action, request.last_updated = status, closing_action, _now()

    def number_after(self, highest: int) -> None:
        """Number new requests after ``highest`` (a demo run on a store that already holds earlier references)."""
        with self._lock:
            self._next_number = max(self._next_number, highest + 1)

    def by_alternative_reference(self, value: str) -> list[ServiceRequest]:
        with self._lock:
            return [r for r in self.requests.values() if value in (v for _t, v in r.alternative_references)]

    # -- the service -----------------------------------------------------------------------------------------------

    def respond(self, body: bytes, headers: Message) -> SoapReply:
        root = parse_xml(body)
        content = body_content(root)
        operation = local_name(content)
        operation_element = without_namespaces(content)
        with self._lock:
            self.calls.append(operation)
            try:
                if operation == "LogonToConnector":
                    return self._logon(operation_element)
                session = _session_of(headers)
                if session not in self.sessions:
                    raise _Fault(NOT_LOGGED_ON)
                if self.session_calls is not None and self.sessions[session] >= self.session_calls:
                    del self.sessions[session]  # its time is up: refused before anything is done
                    self.expired_by_server += 1
                    raise _Fault(NOT_LOGGED_ON)
                self.sessions[session] += 1
                handler = getattr(self, f"_op_{operation}", None)
                if handler is None:
                    raise _Fault(f"Server did not recognize the value of HTTP Header SOAPAction: {operation}")
                result: etree._Element = handler(operation_element, session)
            except _Fault as fault:
                return SoapReply(soap_fault(str(fault)), 500)
        return SoapReply(response(operation, result))

    def _logon(self, operation: etree._Element) -> SoapReply:
        credentials = operation.find("UniformLoginCredentials")
        given = tuple((credentials.findtext(name) or "") if credentials is not None else ""
                      for name in ("DatabaseID", "UniformUserName", "UniformPassword"))
        result = etree.Element("Result")
        if given != self.credentials:
            sub(result, "LogonSuccessful", "false")
            sub(result, "Message", "Logon failed: the user name, password or database is not valid")
            return SoapReply(response("LogonToConnector", result))
        token = secrets.token_hex(12)
        self.sessions[token] = 0
        self.logons += 1
        sub(result, "LogonSuccessful", "true")
        return SoapReply(response("LogonToConnector", result),
                         headers={"Set-Cookie": f"{SESSION_COOKIE}={token}; path=/; HttpOnly"})

    def _op_LogoffFromConnector(self, _operation: etree._Element, session: str) -> etree._Element:
        self.sessions.pop(session, None)
        self.logoffs += 1
        return etree.Element("Result")

    def _op_GetConnectorLoginStatus(self, _operation: etree._Element, _session: str) -> etree._Element:
        result = etree.Element("Result")
        sub(result, "LoggedOn", "true")
        return result

    def _op_GetCnCodeList(self, operation: etree._Element, _session: str) -> etree._Element:
        name = (operation.findtext("ListName") or "").strip()
        if name not in self.code_lists or name in self.missing_code_lists:
            raise _Fault(f"Code list '{name}' does not exist")
        result = etree.Element("Result")
        code_list = sub(result, "CodeList")
        for value, text in self.code_lists[name].items():
            code = sub(code_list, "CnCode")
            sub(code, "CodeValue", value)
            sub(code, "CodeText", text)
        return result

    def _op_SubmitGeneralServiceRequest(self, operation: etree._Element, _session: str) -> etree._Element:
        return self._submit("SubmitGeneralServiceRequest", operation.find("SubmittedGeneralServiceRequest"))

    def _op_SubmitDogServiceRequest(self, operation: etree._Element, _session: str) -> etree._Element:
        return self._submit("SubmitDogServiceRequest", operation.find("SubmittedDogServiceRequest"))

    def _submit(self, operation: str, submitted: etree._Element | None) -> etree._Element:
        result = etree.Element("Result")
        try:
            if submitted is None:
                raise _Refused(f"{operation} holds no submitted service request")
            request = self._accept(operation, submitted)
        except _Refused as refused:
            sub(result, "TransactionSuccess", "False" if self.profile == "strict" else "false")
            sub(sub(sub(result, "TransactionMessages"), "TransactionMessage"), "MessageBrief", str(refused))
            return result
        sub(result, "TransactionSuccess", "True" if self.profile == "strict" else "true")
        identification = sub(result, "ServiceRequestIdentification")
        sub(identification, "ReferenceValue", request.reference)
        sub(identification, "ServiceRequestTechnicalKey", request.technical_key)
        return result

    def _accept(self, operation: str, submitted: etree._Element) -> ServiceRequest:
        complaint_type = submitted.findtext("ComplaintType") or ""
        how = submitted.findtext("HowComplaintReceived") or ""
        self._check_code("SRRECTYPE", complaint_type, "ComplaintType")
        self._check_code("SRRECHOW", how, "HowComplaintReceived")
        site = submitted.find("SubmittedSiteLocation")
        location = {tag_name(child): child.text or "" for child in site} if site is not None else {}
        if not location.get("UPRN") and not (location.get("MapEast") and location.get("MapNorth")):
            raise _Refused("A site location (UPRN or MapEast/MapNorth) is required")
        received = submitted.findtext("TimeReceived") or ""
        try:
            datetime.fromisoformat(received)
        except ValueError as exc:
            raise _Refused(f"TimeReceived '{received}' is not a valid date and time") from exc
        customers: list[dict[str, object]] = []
        for details in submitted.iterfind("Customers/SubmittedCustomer/SubmittedCustomerDetails"):
            type_code = details.findtext("CustomerTypeCode")
            if type_code is not None:
                self._check_code("SRCUSTTYPE", type_code, "CustomerTypeCode")
            customers.append({
                "type": type_code, "name": details.findtext("CustomerName/FullName"),
                "contacts": [(contact.findtext("ContactTypeCode"), contact.findtext("ContactAddress"))
                             for contact in details.iterfind("SubmittedContactDetails/SubmittedContactDetail")],
            })
        number = self._next_number
        self._next_number += 1
        request = ServiceRequest(
            reference=f"{_now():%y}/{number:05d}/SR", technical_key=str(70000 + number), operation=operation,
            complaint_type=complaint_type, how_received=how,
            fields={"NatureOfComplaint": submitted.findtext("NatureOfComplaint") or "", "TimeReceived": received,
                    **location},
            alternative_references=[
                (alternative.findtext("ReferenceType") or "", alternative.findtext("ReferenceValue") or "")
                for alternative in submitted.iterfind("ServiceRequestIdentification/AlternativeReferences/"
                                                      "AlternativeReference")],
            customers=customers,
            xtra={entry.findtext("FieldName") or "": entry.findtext("FieldValue") or ""
                  for entry in submitted.iterfind("XtraValues/SR_Xtra")},
        )
        self.requests[request.reference] = request
        return request

    def _check_code(self, list_name: str, code: str, element: str) -> None:
        if code not in self.code_lists[list_name]:
            raise _Refused(f"{element} '{code}' is not a valid code in list {list_name}")

    def _op_GetGeneralServiceRequestByReferenceValue(self, operation: etree._Element,
                                                     _session: str) -> etree._Element:
        value = (operation.findtext("ReferenceValue") or "").strip()
        request = self.requests.get(value) or next(iter(self.by_alternative_reference(value)), None)
        if request is None:
            raise _Fault(f"No service request found with reference value '{value}'")
        result = etree.Element("Result")
        found = sub(result, "GeneralServiceRequest")
        identification = sub(found, "ServiceRequestIdentification")
        sub(identification, "ReferenceValue", request.reference)
        sub(identification, "ServiceRequestTechnicalKey", request.technical_key)
        if self.profile == "lenient":  # the answer is documented without them: strict does not echo them
            alternatives = sub(identification, "AlternativeReferences")
            for reference_type, reference_value in request.alternative_references:
                alternative = sub(alternatives, "AlternativeReference")
                sub(alternative, "ReferenceType", reference_type)
                sub(alternative, "ReferenceValue", reference_value)
        sub(found, "ComplaintType", request.complaint_type)
        administration = sub(found, "AdministrationDetails")
        sub(administration, "StatusCode", request.status)
        sub(administration, "ClosingActionCode", request.closing_action or "")
        return result

    def _op_GetChangedServiceRequestRefVals(self, operation: etree._Element, _session: str) -> etree._Element:
        text = (operation.findtext("LastUpdated") or "").strip()
        try:
            since = datetime.fromisoformat(text).replace(tzinfo=None)
        except ValueError as exc:
            raise _Fault(f"LastUpdated '{text}' is not a valid date and time") from exc
        result = etree.Element("Result")
        for request in self.requests.values():
            if request.last_updated >= since:
                refval = sub(result, "RefVals")
                sub(refval, "ReferenceValue", request.reference)
                kind = request.operation.removeprefix("Submit").removesuffix("ServiceRequest")
                sub(refval, "RequestType", kind.upper() if self.profile == "strict" else kind)
        return result


def _now() -> datetime:
    """Uniform keeps local wall-clock times without a zone."""
    return datetime.now(LONDON).replace(tzinfo=None)


def _session_of(headers: Message) -> str:
    for part in (headers.get("Cookie") or "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == SESSION_COOKIE:
            return value
    return ""


def main() -> None:
    def start(username: str, password: str, database_id: str, host: str, port: int,
              profile: Profile) -> UniformSimulator:
        return UniformSimulator(username=username, password=password, database_id=database_id, host=host, port=port,
                                profile=profile)

    serve_from_command_line("Uniform", 8027, start)


if __name__ == "__main__":
    main()

