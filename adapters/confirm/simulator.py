"""A Confirm connector web service in a box: for tests, demos and integration engineers' sandboxes.

It speaks the same SOAP as Confirm (``ProcessOperationsRequest`` with ``Authentication`` and ``Operation``s),
checks credentials, assigns enquiry numbers, keeps each enquiry's status log, answers ``GetEnquiry``,
``GetEnquiryStatusChanges``, ``GetEnquiryLookups`` and ``GetCustomerLookups``, and refuses bad codes and stale
logged times with Confirm-style faults. Tests can tell it to be slow, to drop a connection or to fail, and can change an
enquiry's status as an officer would.

The ``strict`` profile does only what Confirm's documentation promises: it answers in Confirm's namespace (as the
default namespace, so ``Response`` and everything under it are namespaced), finds an enquiry with ``GetEnquiry``
by ``EnquiryNumber`` only (one asked for by our reference gets an empty answer), writes times with .NET's seven
fractional digits, and lacks the optional ``GetCustomerLookups``. The ``lenient`` profile also finds enquiries by
our reference, answers without namespaces and has every operation.

    python -m adapters.confirm.simulator --port 8026
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime
from email.message import Message
from zoneinfo import ZoneInfo

from lxml import etree

from adapters.common.soap import body_content, local_name, tag_name, without_namespaces
from adapters.common.soap_server import (
    ENTITY_BOMB,
    Profile,
    SoapReply,
    SoapSimulatorServer,
    serve_from_command_line,
)
from adapters.confirm.soap import MalformedXml, parse_xml, response_envelope, sub

__all__ = ["ENTITY_BOMB", "ConfirmSimulator", "Enquiry", "LogEntry"]

LONDON = ZoneInfo("Europe/London")
LOCAL_FORMAT = "%Y-%m-%dT%H:%M:%S"

#: Service -> (name, {subject: name}); status code -> (name, outstanding); attribute code -> (name, flag).
DEFAULT_SERVICES: dict[str, tuple[str, dict[str, str]]] = {
    "HW": ("Highways", {"POT": "Pothole", "DRN": "Blocked drain", "SIGN": "Damaged sign"}),
    "SL": ("Street lighting", {"OUT": "Light out", "DAY": "Light on in daytime"}),
}
DEFAULT_STATUSES: dict[str, tuple[str, bool]] = {
    "1000": ("Logged", True), "2000": ("Inspection due", True), "3000": ("Works ordered", True),
    "4000": ("Works completed", False), "9000": ("Closed - no action", False), "9100": ("Duplicate", False),
}
DEFAULT_ATTRIBUTES: dict[str, tuple[str, str]] = {
    "DEPT": ("Depth (mm)", "S"), "HAZD": ("Hazard to", "P"), "SEEN": ("First noticed", "D"),
}
#: Pick-list attribute -> its values (code -> name), as EnquiryAttributeValue entries.
DEFAULT_ATTRIBUTE_VALUES: dict[str, dict[str, str]] = {
    "HAZD": {"CYC": "Cyclists", "PED": "Pedestrians", "VEH": "Vehicles"},
}
#: GetCustomerLookups: list element -> (code element, {code: name}).
DEFAULT_CUSTOMER_LOOKUPS: dict[str, tuple[str, dict[str, str]]] = {
    "EnquiryMethod": ("EnquiryMethodCode", {"WEB": "Web", "APP": "App", "TEL": "Telephone", "EML": "Email",
                                            "FTF": "Face to face", "LET": "Letter", "SOC": "Social media"}),
    "CustomerType": ("CustomerTypeCode", {"PUB": "Member of the public", "CLLR": "Councillor"}),
    "PointOfContact": ("PointOfContactCode", {"CB": "Casebridge", "CC": "Contact centre"}),
}
INITIAL_STATUS = "1000"
FIRST_NUMBER = 1001
#: Operations a Confirm may not offer: the strict profile lacks them.
OPTIONAL_OPERATIONS = frozenset({"GetCustomerLookups"})


@dataclass
class LogEntry:
    number: int
    status: str
    logged_time: datetime
    notes: str


@dataclass
class Enquiry:
    number: str
    service: str
    subject: str
    fields: dict[str, str]
    log: list[LogEntry] = field(default_factory=list)
    attributes: list[tuple[str, str]] = field(default_factory=list)
    customer: dict[str, str] = field(default_factory=dict)
    documents: list[dict[str, str]] = field(default_factory=list)

    @property
    def status(self) -> str:
        return self.log[-1].status


class ConfirmSimulator(SoapSimulatorServer):
    path = "/ConfirmConnector"

    def __init__(self, *, username: str = "casebridge", password: str = "secret", database_id: str = "DEMO",
                 host: str = "127.0.0.1", port: int = 0, request_level_faults: bool = False,
                 profile: Profile = "lenient", first_number: int = FIRST_NUMBER) -> None:
        self.credentials = (username, password, database_id)
        #: Confirm reports the fault of a lone operation either inside its ``OperationResponse`` or for the whole
        #: request (``Response`` > ``Fault``); both are seen in production, so both can be played.
        self.request_level_faults = request_level_faults
        self.profile: Profile = profile
        #: Operations this Confirm does not offer (a request for one gets "Unknown operation").
        self.missing_operations: set[str] = set(OPTIONAL_OPERATIONS) if profile == "strict" else set()
        self.services = {code: (name, dict(subjects)) for code, (name, subjects) in DEFAULT_SERVICES.items()}
        self.statuses = dict(DEFAULT_STATUSES)
        self.attribute_types = dict(DEFAULT_ATTRIBUTES)
        self.attribute_values = {code: dict(values) for code, values in DEFAULT_ATTRIBUTE_VALUES.items()}
        self.customer_lookups = {name: (element, dict(codes))
                                 for name, (element, codes) in DEFAULT_CUSTOMER_LOOKUPS.items()}
        self.enquiries: dict[str, Enquiry] = {}
        self.requests: list[list[str]] = []  # the operation names of every request, in order
        #: The elements each GetEnquiry was asked by, in order.
        self.get_enquiry_keys: list[list[str]] = []
        #: Enquiries GetEnquiry refuses to read, with the fault's reason (locked, say).
        self.unreadable: dict[str, str] = {}
        self._next_number = first_number
        self._lock = threading.RLock()
        super().__init__(host=host, port=port, name="confirm-simulator")

    # -- controls for tests and demos ------------------------------------------------------------------------------

    def officer_sets_status(self, number: str, status: str, notes: str = "",
                            when: datetime | None = None) -> LogEntry:
        """An officer moves the enquiry on in Confirm; GetEnquiryStatusChanges will report it."""
        with self._lock:
            enquiry = self.enquiries[number]
            moment = (when or datetime.now(LONDON)).astimezone(LONDON).replace(tzinfo=None)
            entry = LogEntry(len(enquiry.log) + 1, status, max(moment, enquiry.log[-1].logged_time), notes)
            enquiry.log.append(entry)
            return entry

    def number_after(self, highest: int) -> None:
        """Number new enquiries after ``highest`` (a demo run on a store that already holds earlier numbers)."""
        with self._lock:
            self._next_number = max(self._next_number, highest + 1)

    def by_reference(self, reference: str) -> list[Enquiry]:
        with self._lock:
            return [e for e in self.enquiries.values()
                    if reference in (e.fields.get("ExternalSystemReference"), e.fields.get("EnquiryReference"))]

    # -- the service -----------------------------------------------------------------------------------------------

    def respond(self, body: bytes, headers: Message) -> SoapReply:
        return SoapReply(self.handle(body))

    def handle(self, body: bytes) -> bytes:
        """One SOAP request in, one SOAP answer out (HTTP 200 unless a SOAP fault)."""
        request = next(without_namespaces(body_content(parse_xml(body))).iter("Request"), None)
        if request is None:
            raise MalformedXml("no Request element")
        response = etree.Element("Response")
        authentication = request.find("Authentication")
        given = tuple((authentication.findtext(name) or "") if authentication is not None else ""
                      for name in ("Username", "Password", "DatabaseId"))
        if given != self.credentials:
            sub(sub(response, "Fault"), "Reason",
                "Authentication failed: the username, password or database is not valid")
            return self._envelope(response)
        operations = [next(iter(operation), None) for operation in request.findall("Operation")]
        self.requests.append([tag_name(operation) if operation is not None else "" for operation in operations])
        for operation in operations:
            answer = sub(response, "OperationResponse")
            try:
                if operation is None:
                    raise _Fault("Operation is empty")
                name = local_name(operation)
                handler = None if name in self.missing_operations else getattr(self, f"_op_{name}", None)
                if handler is None:
                    raise _Fault(f"Unknown operation {name}")
                with self._lock:
                    answer.append(handler(operation))
            except _Fault as fault:
                if self.request_level_faults and len(operations) == 1:
                    response.remove(answer)
                    sub(sub(response, "Fault"), "Reason", fault.reason)
                else:
                    sub(sub(answer, "Fault"), "Reason", fault.reason)
        return self._envelope(response)

    def _envelope(self, response: etree._Element) -> bytes:
        return response_envelope(response, namespaced=self.profile == "strict")

    def _time(self, moment: datetime) -> str:
        """Local time as this Confirm writes it: whole seconds, or (strict) with .NET's seven fractional digits."""
        if self.profile == "strict":
            return f"{moment:{LOCAL_FORMAT}}.{moment.microsecond:06d}0"
        return moment.strftime(LOCAL_FORMAT)

    def _op_NewEnquiry(self, operation: etree._Element) -> etree._Element:
        service, subject = operation.findtext("ServiceCode") or "", operation.findtext("SubjectCode") or ""
        if service not in self.services or subject not in self.services[service][1]:
            raise _Fault(f"Validate enquiry.1001.Service Code '{service}' / Subject Code '{subject}' is not valid")
        logged = _parse_local(operation.findtext("LoggedTime"), "LoggedTime")
        description = operation.findtext("EnquiryDescription") or ""
        if len(description) > 2000:
            raise _Fault("Validate enquiry.1003.Enquiry Description is longer than 2000 characters")
        attributes = []
        for attribute in operation.findall("EnquiryAttribute"):
            code = attribute.findtext("EnqAttribTypeCode") or ""
            value = next((child.text for child in attribute if tag_name(child).startswith("EnqAttrib") and
                          tag_name(child) != "EnqAttribTypeCode"), None)
            if code not in self.attribute_types:
                raise _Fault(f"Validate enquiry.1004.Attribute type '{code}' is not valid")
            if not value:
                raise _Fault(f"Validate enquiry.1005.Attribute '{code}' has no value")
            attributes.append((code, value))
        number = str(self._next_number)
        self._next_number += 1
        fields = {tag_name(child): child.text or "" for child in operation if len(child) == 0}
        customer_element = operation.find("EnquiryCustomer")
        enquiry = Enquiry(
            number=number, service=service, subject=subject, fields=fields, attributes=attributes,
            customer={tag_name(child): child.text or "" for child in customer_element} if customer_element is not None
            else {},
            documents=[{tag_name(child): child.text or "" for child in document}
                       for document in operation.findall("EnquiryDocument")],
        )
        enquiry.log.append(LogEntry(1, INITIAL_STATUS, logged, "Enquiry logged"))
        self.enquiries[number] = enquiry
        answer = etree.Element("NewEnquiryResponse")
        sub(sub(answer, "Enquiry"), "EnquiryNumber", number)
        return answer

    def _op_EnquiryUpdate(self, operation: etree._Element) -> etree._Element:
        enquiry = self._enquiry(operation.findtext("EnquiryNumber"))
        status = operation.findtext("EnquiryStatusCode") or enquiry.status
        if status not in self.statuses:
            raise _Fault(f"Validate enquiry update.1006.Enquiry Status Code '{status}' is not valid")
        given = operation.findtext("LoggedTime")
        logged = _parse_local(given, "LoggedTime") if given else datetime.now(LONDON).replace(tzinfo=None)
        latest = enquiry.log[-1].logged_time
        if given and logged <= latest:
            raise _Fault(f"Validate enquiry update.1002.Logged Date {logged:%d/%m/%Y %H:%M:%S} must be greater "
                         f"than the Effective Date of current status log")
        entry = LogEntry(len(enquiry.log) + 1, status, max(logged, latest), operation.findtext("StatusLogNotes") or "")
        enquiry.log.append(entry)
        answer = etree.Element("EnquiryUpdateResponse")
        found = sub(answer, "Enquiry")
        sub(found, "EnquiryNumber", enquiry.number)
        sub(found, "EnquiryLogNumber", str(entry.number))
        return answer

    def _op_GetEnquiry(self, operation: etree._Element) -> etree._Element:
        self.get_enquiry_keys.append([tag_name(child) for child in operation])
        number = operation.findtext("EnquiryNumber")
        answer = etree.Element("GetEnquiryResponse")
        if number in self.unreadable:
            raise _Fault(self.unreadable[number or ""])
        if number:
            enquiry = self._enquiry(number)
        elif self.profile == "strict":
            return answer  # GetEnquiry is documented by EnquiryNumber: asked anything else, nothing is found
        else:
            reference = operation.findtext("ExternalSystemReference") or operation.findtext("EnquiryReference")
            matches = self.by_reference(reference or "")
            if not matches:
                raise _Fault(f"No enquiry with reference '{reference}'")
            enquiry = matches[0]
        found = sub(answer, "Enquiry")
        sub(found, "EnquiryNumber", enquiry.number)
        sub(found, "ServiceCode", enquiry.service)
        sub(found, "SubjectCode", enquiry.subject)
        sub(found, "EnquiryStatusCode", enquiry.status)
        sub(found, "EnquiryLogTime", self._time(enquiry.log[0].logged_time))
        sub(found, "LoggedTime", self._time(enquiry.log[-1].logged_time))
        for name in ("EnquiryDescription", "EnquiryX", "EnquiryY", "ExternalSystemNumber", "ExternalSystemReference",
                     "EnquiryReference"):
            if enquiry.fields.get(name):
                sub(found, name, enquiry.fields[name])
        for entry in enquiry.log:
            found.append(self._log_element(entry))
        return answer

    def _op_GetEnquiryStatusChanges(self, operation: etree._Element) -> etree._Element:
        start = _parse_local(operation.findtext("LoggedTimeFrom"), "LoggedTimeFrom")
        end = _parse_local(operation.findtext("LoggedTimeTo"), "LoggedTimeTo")
        answer = etree.Element("GetEnquiryStatusChangesResponse")
        for enquiry in self.enquiries.values():
            # Every status log entry counts, the first (the enquiry being logged) included.
            entries = [entry for entry in enquiry.log if start <= entry.logged_time <= end]
            if entries:
                updated = sub(answer, "UpdatedEnquiry")
                sub(updated, "EnquiryNumber", enquiry.number)
                for entry in entries:
                    updated.append(self._log_element(entry))
        return answer

    def _op_GetEnquiryLookups(self, _operation: etree._Element) -> etree._Element:
        answer = etree.Element("GetEnquiryLookupsResponse")
        for code, (name, subjects) in self.services.items():
            service = sub(answer, "TypeOfService")
            sub(service, "ServiceCode", code)
            sub(service, "ServiceName", name)
            for subject_code, subject_name in subjects.items():
                subject = sub(service, "EnquirySubject")
                sub(subject, "SubjectCode", subject_code)
                sub(subject, "SubjectName", subject_name)
        for code, (name, flag) in self.attribute_types.items():
            attribute = sub(answer, "EnquiryAttributeType")
            sub(attribute, "EnqAttribTypeCode", code)
            sub(attribute, "EnqAttribTypeName", name)
            sub(attribute, "EnqAttribTypeFlag", flag)
            for value_code, value_name in self.attribute_values.get(code, {}).items():
                value = sub(attribute, "EnquiryAttributeValue")
                sub(value, "EnqAttribValueCode", value_code)
                sub(value, "EnqAttribValueName", value_name)
        for code, (name, outstanding) in self.statuses.items():
            status = sub(answer, "EnquiryStatus")
            sub(status, "EnqStatusCode", code)
            sub(status, "EnqStatusName", name)
            sub(status, "OutstandingFlag", "true" if outstanding else "false")
        return answer

    def _op_GetCustomerLookups(self, _operation: etree._Element) -> etree._Element:
        answer = etree.Element("GetCustomerLookupsResponse")
        for list_name, (code_element, codes) in self.customer_lookups.items():
            for code, name in codes.items():
                entry = sub(answer, list_name)
                sub(entry, code_element, code)
                sub(entry, code_element.replace("Code", "Name"), name)
        return answer

    def _enquiry(self, number: str | None) -> Enquiry:
        enquiry = self.enquiries.get(number or "")
        if enquiry is None:
            raise _Fault(f"Enquiry {number} does not exist")
        return enquiry

    def _log_element(self, entry: LogEntry) -> etree._Element:
        log = etree.Element("EnquiryStatusLog")
        sub(log, "EnquiryLogNumber", str(entry.number))
        sub(log, "EnquiryStatusCode", entry.status)
        sub(log, "LoggedTime", self._time(entry.logged_time))
        sub(log, "LogEffectiveTime", self._time(entry.logged_time))
        if entry.notes:
            sub(log, "StatusLogNotes", entry.notes)
        return log


class _Fault(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _parse_local(text: str | None, name: str) -> datetime:
    if not text:
        raise _Fault(f"{name} is required")
    try:
        return datetime.fromisoformat(text.strip()).replace(tzinfo=None)
    except ValueError as exc:
        raise _Fault(f"{name} '{text}' is not a valid date and time") from exc


def main() -> None:
    def start(username: str, password: str, database_id: str, host: str, port: int,
              profile: Profile) -> ConfirmSimulator:
        return ConfirmSimulator(username=username, password=password, database_id=database_id, host=host, port=port,
                                profile=profile)

    serve_from_command_line("Confirm", 8026, start)


if __name__ == "__main__":
    main()
