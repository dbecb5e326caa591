"""Canonical cases to Confirm enquiries and back, over Confirm's SOAP connector web service."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

import structlog
from lxml import etree
from pydantic import ValidationError

from adapters.common import soap_client
from adapters.common.grid import grid_reference
from adapters.common.soap import MalformedXml, SoapFault, first_text, lob_time
from adapters.common.soap_client import NotOffered
from adapters.confirm.config import ConfirmConfig, ConfirmMapping, ServiceSubject
from adapters.confirm.soap import (
    CONTENT_TYPE,
    SOAP_ACTION,
    OperationResult,
    RequestFault,
    operation_results,
    request_envelope,
    sub,
)
from broker.sdk import (
    Adapter,
    AnyEvent,
    Capability,
    Case,
    CaseClosed,
    CaseCreated,
    CaseNoteAdded,
    CaseStatus,
    CaseStatusChanged,
    CaseUpdated,
    DeliveryOutcome,
    DeliveryRequest,
    DeliveryUnconfirmed,
    IdentifiedReporter,
    LobStatusChange,
    PermanentDeliveryError,
    Person,
    RepresentativeReporter,
    TransientDeliveryError,
)

log = structlog.get_logger("casebridge.confirm")

DESCRIPTION_LIMIT = 2000
CONTACT_NAME_LIMIT = 50
PHONE_LIMIT = 20
#: Confirm answers GetEnquiry slowly; more than this many per request risks its ~300 s server timeout.
GET_ENQUIRY_BATCH = 10
_STALE_UPDATE = "must be greater than the effective date"
#: How Confirm says that no enquiry matches a GetEnquiry.
_NOT_FOUND = ("no enquiry", "not found", "does not exist", "no matching")
#: The longest GetEnquiryStatusChanges window asked for at once (as the status poll does).
SEARCH_WINDOW = timedelta(hours=6)
#: An enquiry's status log starts at this log number: its first entry is the enquiry being logged, not news.
FIRST_LOG_NUMBER = "1"
#: The two documented spellings of a status code: ``EnquiryStatusCode`` (status logs, enquiries) and
#: ``EnqStatusCode`` (GetEnquiryLookups); either is read wherever a status code is expected.
STATUS_CODE = ("EnquiryStatusCode", "EnqStatusCode")
#: Attribute type and value codes, in the spelling of GetEnquiryLookups and the longer one.
ATTRIBUTE_TYPE_CODE = ("EnqAttribTypeCode", "EnquiryAttributeTypeCode")
ATTRIBUTE_VALUE_CODE = ("EnqAttribValueCode", "EnquiryAttributeValueCode")


@dataclass(frozen=True)
class StatusChangeRecord:
    """One entry of Confirm's status log, as GetEnquiryStatusChanges reports it."""

    enquiry_number: str
    log_number: str
    status_code: str
    logged_time: str
    notes: str | None


class _NotOffered(Exception):
    """Confirm answered a look-up operation with a fault: this Confirm does not offer it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _texts(parent: etree._Element, *paths: str) -> list[str]:
    """The texts of every element at any of ``paths`` (spellings of one element), sorted and without repeats."""
    return sorted({(element.text or "").strip() for path in paths for element in parent.iterfind(path)} - {""})


def _enquiry_codes(lookups: etree._Element) -> dict[str, Any]:
    """GetEnquiryLookups as saved: services and their subjects, statuses, attribute types, flags and values."""
    attribute_types = {first_text(attribute, *ATTRIBUTE_TYPE_CODE) or "": attribute
                       for attribute in lookups.iterfind("EnquiryAttributeType")}
    attribute_types.pop("", None)
    return {
        "services": {first_text(service, "ServiceCode") or "": _texts(service, "EnquirySubject/SubjectCode")
                     for service in lookups.iterfind("TypeOfService")},
        "statuses": _texts(lookups, *(f"EnquiryStatus/{name}" for name in STATUS_CODE)),
        "attributes": sorted(attribute_types),
        "attribute_flags": {code: first_text(attribute, "EnqAttribTypeFlag", "EnquiryAttributeTypeFlag") or ""
                            for code, attribute in attribute_types.items()},
        "attribute_values": {code: _texts(attribute, *(f"EnquiryAttributeValue/{name}"
                                                       for name in ATTRIBUTE_VALUE_CODE))
                             for code, attribute in attribute_types.items()
                             if attribute.find("EnquiryAttributeValue") is not None},
    }


def _customer_codes(lookups: etree._Element) -> dict[str, Any]:
    """GetCustomerLookups as saved: enquiry methods, customer types and points of contact."""
    return {
        "enquiry_methods": _texts(lookups, "EnquiryMethod/EnquiryMethodCode"),
        "customer_types": _texts(lookups, "CustomerType/CustomerTypeCode"),
        "points_of_contact": _texts(lookups, "PointOfContact/PointOfContactCode"),
    }


def _customer_code_problems(codes: ConfirmMapping,
                            lookups: dict[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
    """Enquiry method, customer type and point-of-contact codes that GetCustomerLookups did not list."""
    problems: list[tuple[tuple[str | int, ...], str]] = []
    if "enquiry_methods" in lookups:
        known = set(lookups["enquiry_methods"] or [])
        problems += [(("enquiry_methods", channel), f"Confirm has no enquiry method code {code!r}")
                     for channel, code in codes.enquiry_methods.items() if code not in known]
    for field, key, label in (("customer_type", "customer_types", "customer type"),
                              ("point_of_contact", "points_of_contact", "point of contact")):
        code = getattr(codes, field)
        if key in lookups and code is not None and code not in set(lookups[key] or []):
            problems.append(((field,), f"Confirm has no {label} code {code!r}"))
    return problems


def _attribute_value_problems(codes: ConfirmMapping,
                              lookups: dict[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
    """Pick-list values Confirm does not offer, and date attributes that Confirm does not hold as dates."""
    problems: list[tuple[tuple[str | int, ...], str]] = []
    flags: dict[str, str] = lookups.get("attribute_flags") or {}
    values: dict[str, list[str]] = lookups.get("attribute_values") or {}
    for canonical, attribute in codes.attributes.items():
        flag = flags.get(attribute.code)
        if flag is not None and (attribute.type == "date") != (flag == "D"):
            problems.append((("attributes", canonical, "type"),
                             f"Confirm attribute type {attribute.code!r} has flag {flag!r}; "
                             f"type {attribute.type!r} does not match it"))
        if attribute.type == "code" and attribute.code in values:
            problems += [(("attributes", canonical, "values", ours),
                          f"Confirm attribute type {attribute.code!r} has no value code {theirs!r}")
                         for ours, theirs in attribute.values.items() if theirs not in values[attribute.code]]
    return problems


class ConfirmAdapter(Adapter[ConfirmConfig, ConfirmMapping]):
    """Creates enquiries (``NewEnquiry``), updates them (``EnquiryUpdate``), reports their status changes
    (``GetEnquiryStatusChanges``), and finds what an unconfirmed create made by reading the enquiries logged since
    (``GetEnquiry`` by number), matching our reference."""

    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.create, Capability.update, Capability.lookup, Capability.reconcile, Capability.poll_updates}
    )

    def __init__(self, target: str, config: ConfirmConfig | dict[str, Any],
                 mapping: ConfirmMapping | dict[str, Any] | None = None) -> None:
        super().__init__(target, config, mapping)
        self.zone = ZoneInfo(self.config.time_zone)
        self._client = soap_client.soap_http_client(self.config.max_response_bytes,
                                                    {"Content-Type": CONTENT_TYPE, "SOAPAction": SOAP_ACTION},
                                                    timeout=self.config.timeout_seconds)

    @classmethod
    def unknown_code_problems(cls, mapping: dict[str, Any],
                              lookups: dict[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
        try:
            codes = ConfirmMapping.model_validate(mapping)
        except ValidationError:
            return []  # reported by mapping_problems
        # A list missing from the saved file was not offered (or predates the file) and is not judged.
        problems: list[tuple[tuple[str | int, ...], str]] = _customer_code_problems(codes, lookups)
        problems += _attribute_value_problems(codes, lookups)
        if "services" in lookups:
            services: dict[str, list[str]] = lookups["services"] or {}
            for canonical, pair in codes.services.items():
                if pair.service not in services:
                    problems.append((("services", canonical, "service"),
                                     f"Confirm has no service code {pair.service!r}"))
                elif pair.subject not in (services[pair.service] or []):
                    problems.append((("services", canonical, "subject"),
                                     f"Confirm service {pair.service!r} has no subject code {pair.subject!r}"))
        if "attributes" in lookups:
            attributes = set(lookups["attributes"] or [])
            problems += [(("attributes", canonical, "code"),
                          f"Confirm has no enquiry attribute type {attribute.code!r}")
                         for canonical, attribute in codes.attributes.items() if attribute.code not in attributes]
        if "statuses" in lookups:
            statuses = set(lookups["statuses"] or [])
            problems += [(("status_codes", canonical), f"Confirm has no enquiry status code {code!r}")
                         for canonical, code in codes.status_codes.items() if code not in statuses]
            problems += [(("statuses", code), f"Confirm has no enquiry status code {code!r}")
                         for code in codes.statuses if code not in statuses]
        return problems

    def saved_lookups(self) -> tuple[dict[str, Any], list[NotOffered]]:
        """``GetEnquiryLookups`` and ``GetCustomerLookups`` in the shape kept in ``<target>.lookups.yaml`` for
        ``broker check``, as far as this Confirm offers them, and the operations it does not offer (their codes are
        left out of the file, so ``broker check`` does not judge them)."""
        codes: dict[str, Any] = {}
        not_offered: list[NotOffered] = []
        for operation, read in (("GetEnquiryLookups", _enquiry_codes), ("GetCustomerLookups", _customer_codes)):
            try:
                codes.update(read(self._lookup_list(operation)))
            except _NotOffered as missing:
                log.warning("confirm.lookup_not_offered", target=self.target, operation=operation,
                            reason=missing.reason)
                not_offered.append(NotOffered(operation, missing.reason))
        return codes, not_offered

    # -- delivery ------------------------------------------------------------------------------------------------

    def deliver(self, request: DeliveryRequest) -> DeliveryOutcome:
        event = request.event
        if isinstance(event, CaseCreated):
            if request.external_ref:  # created by an earlier delivery: nothing to do twice
                return DeliveryOutcome(external_ref=request.external_ref, detail={"already_created": True})
            return self._create(event, request)
        if not request.external_ref:
            raise PermanentDeliveryError(
                "no_enquiry", f"case {event.case_id!r} has no Confirm enquiry yet; its case.created was not delivered",
            )
        return self._update(event, request.external_ref)

    def _create(self, event: CaseCreated, request: DeliveryRequest) -> DeliveryOutcome:
        operation = self._new_enquiry(event.case, event, request.our_reference)
        [result] = self._call([operation], self.config.timeout_seconds)
        if result.fault is not None:
            raise self._refusal(result.fault)
        number = first_text(result.element, "Enquiry/EnquiryNumber", "EnquiryNumber")
        if not number:
            raise TransientDeliveryError("confirm_no_enquiry_number", "NewEnquiry answered without an EnquiryNumber")
        # The enquiry's first status log entry is its being logged: polling must not report it back as news.
        detail: dict[str, Any] = {"enquiry_number": number, "lob_update_id": f"{number}:{FIRST_LOG_NUMBER}"}
        if len(event.case.description) > DESCRIPTION_LIMIT:
            detail["description_truncated_from"] = len(event.case.description)
        return DeliveryOutcome(external_ref=number, detail=detail)

    def _update(self, event: AnyEvent, enquiry_number: str) -> DeliveryOutcome:
        [result] = self._call([self._enquiry_update(event, enquiry_number, timed=True)], self.config.timeout_seconds)
        resubmitted = False
        if result.fault is not None and _STALE_UPDATE in result.fault.lower():
            # Confirm holds a status log entry newer than this event: it accepts the update only without a
            # logged time and status of its own, so the notes are kept and the status left as Confirm has it.
            [result] = self._call([self._enquiry_update(event, enquiry_number, timed=False)],
                                  self.config.timeout_seconds)
            resubmitted = True
        if result.fault is not None:
            raise self._refusal(result.fault)
        log_number = first_text(result.element, "Enquiry/EnquiryLogNumber", "EnquiryLogNumber")
        detail: dict[str, Any] = {"enquiry_log_number": log_number}
        if log_number:
            detail["lob_update_id"] = f"{enquiry_number}:{log_number}"  # the poll will not echo it back
        if resubmitted:
            detail["resubmitted_without_time_and_status"] = True
        status = event.change.status.value if isinstance(event, CaseStatusChanged | CaseClosed) else None
        if status is not None and status not in self.mapping.status_codes:
            # Sent as notes only: the audit shows that Confirm's status was left as it was.
            detail["status_not_mapped"] = status
            log.warning("confirm.status_not_mapped", target=self.target, status=status)
        return DeliveryOutcome(external_ref=enquiry_number, detail=detail)

    def find_delivered(self, request: DeliveryRequest) -> DeliveryOutcome | None:
        """For a create: the enquiry an earlier attempt made, found by what Confirm offers (see :meth:`reconcile`).

        Confirm has no look-up by our reference (``GetEnquiry`` takes an ``EnquiryNumber``): the enquiries logged
        since the first attempt are listed and read, and ours is the one carrying our reference. Found, its outcome is
        returned; not found, :class:`DeliveryUnconfirmed` is raised, because a miss proves nothing (the timed-out
        create may still be in progress at Confirm); a search that failed is a TransientDeliveryError.
        """
        if not isinstance(request.event, CaseCreated):
            return None
        try:
            found, unread = self._search([request])
        except TransientDeliveryError as exc:
            # Creating now could make a second enquiry if the first did land: ask again later instead.
            raise TransientDeliveryError("confirm_lookup_failed",
                                         f"could not search Confirm for the enquiry: {exc.message}") from exc
        if request.our_reference in found:
            return found[request.our_reference]
        raise DeliveryUnconfirmed(
            "confirm_enquiry_not_seen",
            f"no enquiry with our reference {request.our_reference!r} among those Confirm logged since "
            f"{self._local(self._search_start([request]))}"
            + (f" (enquiries {', '.join(unread)} could not be read)" if unread else "")
            + "; Confirm offers no look-up by our reference that could tell whether the earlier attempt is still "
              "being processed, so it is not created again blindly",
        )

    def reconcile(self, unconfirmed: Sequence[DeliveryRequest]) -> dict[str, DeliveryOutcome]:
        """The enquiries these creates made, keyed by our reference: one search for all of them.

        ``GetEnquiryStatusChanges`` lists the enquiries with a status log entry (an enquiry's first entry is its
        being logged) from the earliest first attempt or case time, less ``search_margin_minutes``, to now, in
        windows of six hours; ``GetEnquiry`` reads them by number, ten to a request, newest first, until every
        reference is found. A delivery absent from the answer was searched for and not found. A search that failed,
        or that could not read an enquiry that might be one of them, raises TransientDeliveryError: nothing is
        concluded from it.
        """
        creates = [request for request in unconfirmed if isinstance(request.event, CaseCreated)]
        if not creates:
            return {}
        found, unread = self._search(creates)
        if unread and len(found) < len({request.our_reference for request in creates}):
            refused = ", ".join(f"{number} ({reason})" for number, reason in unread.items())
            raise TransientDeliveryError(
                "confirm_search_incomplete",
                f"Confirm would not give enquiries {refused}; any of them could be one of those searched for, so "
                "nothing is concluded",
            )
        return found

    def _search_start(self, requests: Sequence[DeliveryRequest]) -> datetime:
        """When the search starts: the earliest first attempt or case time (the LoggedTime sent), less the margin."""
        moments = [moment for request in requests
                   for moment in (request.first_attempt_at, request.event.occurred_at) if moment is not None]
        return min(moments) - timedelta(minutes=self.config.search_margin_minutes)

    def _search(self, requests: Sequence[DeliveryRequest]) -> tuple[dict[str, DeliveryOutcome], dict[str, str]]:
        """The enquiries carrying these requests' references, by reference; and the enquiries Confirm would not
        give, with its reasons (an enquiry that "does not exist" is no one's and is not counted)."""
        try:
            return self._search_enquiries(requests)
        except PermanentDeliveryError as exc:
            if exc.reason == "confirm_authentication":
                raise
            # A search is never refused for good but for the credentials: whatever went wrong, it may go next time.
            raise TransientDeliveryError(exc.reason, exc.message) from exc

    def _search_enquiries(self, requests: Sequence[DeliveryRequest]) -> tuple[dict[str, DeliveryOutcome],
                                                                              dict[str, str]]:
        wanted = {request.our_reference for request in requests}
        margin = timedelta(minutes=self.config.search_margin_minutes)
        start, end = self._search_start(requests), datetime.now(UTC) + margin
        numbers: dict[str, None] = {}
        while start < end:
            window_end = min(start + SEARCH_WINDOW, end)
            for record in self.status_log_changes(start, window_end):
                numbers.setdefault(record.enquiry_number)
            start = window_end
        found: dict[str, DeliveryOutcome] = {}
        unread: dict[str, str] = {}
        # Newest first: an enquiry made by a recent attempt is most likely among the highest numbers.
        ordered = sorted((number for number in numbers if number),
                         key=lambda number: (number.isdigit(), int(number) if number.isdigit() else 0, number),
                         reverse=True)
        for begin in range(0, len(ordered), GET_ENQUIRY_BATCH):
            for number, enquiry in self.get_enquiries(ordered[begin:begin + GET_ENQUIRY_BATCH]).items():
                if isinstance(enquiry, str):
                    if not any(phrase in enquiry.lower() for phrase in _NOT_FOUND):
                        unread[number] = enquiry
                    continue
                reference = self._our_reference_in(enquiry)
                if reference in wanted and reference not in found:
                    found[reference] = DeliveryOutcome(external_ref=number, detail={
                        "found_by_reference": True, "enquiry_number": number,
                        "lob_update_id": f"{number}:{FIRST_LOG_NUMBER}"})
            if len(found) == len(wanted):
                break
        log.info("confirm.searched", target=self.target, enquiries=len(ordered), found=len(found),
                 wanted=len(wanted), unread=len(unread))
        return found, unread

    def _our_reference_in(self, enquiry: etree._Element) -> str | None:
        """Our reference as the enquiry carries it in the configured element, if it is ours."""
        element = self.config.reference_element
        reference = first_text(enquiry, f"Enquiry/{element}", element)
        if reference and element == "ExternalSystemReference":
            system = first_text(enquiry, "Enquiry/ExternalSystemNumber", "ExternalSystemNumber")
            if system and system != self.config.external_system_number:
                return None  # another system's reference that happens to match
        return reference

    # -- reading back ----------------------------------------------------------------------------------------------

    def status_log_changes(self, since: datetime, until: datetime) -> list[StatusChangeRecord]:
        """``GetEnquiryStatusChanges`` for [since, until], by the entries' LoggedTime."""
        operation = etree.Element("GetEnquiryStatusChanges")
        sub(operation, "LoggedTimeFrom", self._local(since))
        sub(operation, "LoggedTimeTo", self._local(until))
        [result] = self._call([operation], self.config.lookup_timeout_seconds)
        if result.fault is not None:
            raise TransientDeliveryError("confirm_fault", result.fault)
        changes = []
        for updated in result.element.iter("UpdatedEnquiry") if result.element is not None else []:
            for entry in updated.findall("EnquiryStatusLog"):
                changes.append(StatusChangeRecord(
                    enquiry_number=first_text(updated, "EnquiryNumber") or "",
                    log_number=first_text(entry, "EnquiryLogNumber", "EnqLogNumber") or "",
                    status_code=first_text(entry, *STATUS_CODE) or "",
                    logged_time=first_text(entry, "LoggedTime") or "",
                    notes=entry.findtext("StatusLogNotes"),
                ))
        return changes

    def status_changes(self, since: datetime, until: datetime) -> list[LobStatusChange]:
        """Confirm's status log entries as canonical changes; codes without a mapping are left out (and logged)."""
        changes = []
        for record in self.status_log_changes(since, until):
            canonical = self.mapping.statuses.get(record.status_code)
            if canonical is None:
                log.warning("confirm.unmapped_status", target=self.target, status_code=record.status_code)
                continue
            try:
                logged = lob_time(record.logged_time, self.zone)
            except ValueError:
                log.warning("confirm.unreadable_logged_time", target=self.target, enquiry=record.enquiry_number,
                            logged_time=record.logged_time[:40])
                continue
            changes.append(LobStatusChange(
                reference=record.enquiry_number,
                update_id=f"{record.enquiry_number}:{record.log_number}",
                status=CaseStatus(canonical),
                external_status_code=record.status_code,
                occurred_at=logged,
                notes=record.notes if self.config.publish_notes else None,
            ))
        return changes

    def get_enquiries(self, numbers: list[str]) -> dict[str, etree._Element | str]:
        """Enquiries by number, at most ten per request; a number Confirm refuses maps to its fault text."""
        found: dict[str, etree._Element | str] = {}
        for start in range(0, len(numbers), GET_ENQUIRY_BATCH):
            batch = numbers[start:start + GET_ENQUIRY_BATCH]
            operations = []
            for number in batch:
                operation = etree.Element("GetEnquiry")
                sub(operation, "EnquiryNumber", number)
                operations.append(operation)
            for number, result in zip(batch, self._call(operations, self.config.lookup_timeout_seconds), strict=True):
                if result.fault is not None:
                    found[number] = result.fault
                elif result.element is not None:
                    found[number] = result.element
        return found

    def lookups(self) -> etree._Element:
        """``GetEnquiryLookups``: service, subject, attribute and status codes Confirm knows."""
        return self._offered_lookup_list("GetEnquiryLookups")

    def customer_lookups(self) -> etree._Element:
        """``GetCustomerLookups``: enquiry method, customer type and point-of-contact codes."""
        return self._offered_lookup_list("GetCustomerLookups")

    def _offered_lookup_list(self, operation: str) -> etree._Element:
        try:
            return self._lookup_list(operation)
        except _NotOffered as missing:
            raise PermanentDeliveryError("confirm_fault", f"Confirm refused {operation}: {missing.reason}") from missing

    def _lookup_list(self, operation: str) -> etree._Element:
        """One look-up operation's answer; raises _NotOffered when Confirm answers it with a fault (it does not
        offer that operation), and DeliveryErrors when the call itself failed or the credentials were refused."""
        try:
            [result] = self._call([etree.Element(operation)], self.config.lookup_timeout_seconds)
        except (PermanentDeliveryError, TransientDeliveryError) as exc:
            if exc.reason in ("confirm_fault", "confirm_soap_fault"):  # a SOAP fault: the operation is refused
                raise _NotOffered(exc.message) from exc
            raise
        if result.fault is not None:
            raise _NotOffered(result.fault)
        if result.element is None:
            raise _NotOffered(f"no {operation} in the answer")
        return result.element

    # -- building operations ---------------------------------------------------------------------------------------

    def _service_subject(self, service_code: str) -> ServiceSubject:
        codes = self.mapping.services.get(service_code)
        if codes is None:
            raise PermanentDeliveryError(
                "unmapped_service_code",
                f"service code {service_code!r} has no Confirm service and subject in the mapping of target "
                f"{self.target!r}",
            )
        return codes

    def _new_enquiry(self, case: Case, event: CaseCreated, our_reference: str) -> etree._Element:
        codes = self._service_subject(case.service_code)
        enquiry = etree.Element("NewEnquiry")
        sub(enquiry, "EnquiryNumber", "1")
        sub(enquiry, "ServiceCode", codes.service)
        sub(enquiry, "SubjectCode", codes.subject)
        sub(enquiry, "EnquiryDescription", case.description[:DESCRIPTION_LIMIT])
        grid = grid_reference(case.location)
        if grid is not None:
            easting, northing = grid
            sub(enquiry, "EnquiryX", f"{easting:.2f}")
            sub(enquiry, "EnquiryY", f"{northing:.2f}")
        location = case.location.address or case.location.description or case.location.postcode
        if location:
            sub(enquiry, "EnquiryLocation", location[:2000])
        sub(enquiry, "LoggedTime", self._local(event.occurred_at))
        if self.config.reference_element == "ExternalSystemReference":
            sub(enquiry, "ExternalSystemNumber", self.config.external_system_number)
        sub(enquiry, self.config.reference_element, our_reference)
        self._contact(enquiry, case)
        for name, value in case.attributes.items():
            self._attribute(enquiry, name, value)
        self._customer(enquiry, case)
        for attachment in case.attachments:
            document = sub(enquiry, "EnquiryDocument")
            sub(document, "DocumentNotes", attachment.name)
            sub(document, "DocumentLocation", str(attachment.url))
        return enquiry

    def _enquiry_update(self, event: AnyEvent, enquiry_number: str, *, timed: bool) -> etree._Element:
        update = etree.Element("EnquiryUpdate")
        sub(update, "EnquiryNumber", enquiry_number)
        status = None
        notes = None
        if isinstance(event, CaseStatusChanged | CaseClosed):
            status = self.mapping.status_codes.get(event.change.status.value)
            notes = event.change.reason
        elif isinstance(event, CaseNoteAdded):
            notes = event.note.text
        elif isinstance(event, CaseUpdated):
            codes = self._service_subject(event.case.service_code)  # never leave Confirm on the old service quietly
            sub(update, "ServiceCode", codes.service)
            sub(update, "SubjectCode", codes.subject)
            notes = f"Details updated: {event.case.description}"
        if timed:
            sub(update, "LoggedTime", self._local(event.occurred_at))
            if status:
                sub(update, "EnquiryStatusCode", status)
        sub(update, "StatusLogNotes", (notes or f"{event.event_type.value} from {event.source}")[:DESCRIPTION_LIMIT])
        return update

    def _contact(self, enquiry: etree._Element, case: Case) -> None:
        reporter = case.reporter
        person: Person | None = None
        if isinstance(reporter, IdentifiedReporter):
            person = reporter.person
        elif isinstance(reporter, RepresentativeReporter):
            person = reporter.representative
        if person is None:
            return
        if person.name:
            sub(enquiry, "ContactName", person.name[:CONTACT_NAME_LIMIT])
        if person.email:
            sub(enquiry, "ContactEmail", person.email)
        if person.phone:
            sub(enquiry, "ContactPhone", person.phone[:PHONE_LIMIT])

    def _customer(self, enquiry: etree._Element, case: Case) -> None:
        reporter = case.reporter
        if isinstance(reporter, IdentifiedReporter):
            person = reporter.person
        elif isinstance(reporter, RepresentativeReporter):
            person = reporter.on_behalf_of
        else:
            return  # anonymous reports send no customer
        customer = sub(enquiry, "EnquiryCustomer")
        if person.email:
            sub(customer, "CustomerEmail", person.email)
        if person.phone:
            sub(customer, "CustomerPhone", person.phone[:PHONE_LIMIT])
        if person.name:
            forename, _, surname = person.name.rpartition(" ")
            if forename:
                sub(customer, "CustomerForename", forename[:CONTACT_NAME_LIMIT])
            sub(customer, "CustomerSurname", (surname or person.name)[:CONTACT_NAME_LIMIT])
        method = self.mapping.enquiry_methods.get(case.channel.value)
        if method:
            sub(customer, "EnquiryMethodCode", method)
        if self.mapping.point_of_contact:
            sub(customer, "PointOfContactCode", self.mapping.point_of_contact)
        if self.mapping.customer_type:
            sub(customer, "CustomerTypeCode", self.mapping.customer_type)

    def _attribute(self, enquiry: etree._Element, name: str, value: Any) -> None:
        mapping = self.mapping.attributes.get(name)
        if mapping is None or value in (None, "", []):
            return  # unmapped answers stay in our store; blank pick-lists make Confirm fault
        if isinstance(value, list):
            text = ",".join(value)
        else:
            text = str(value).lower() if isinstance(value, bool) else str(value)
        attribute = sub(enquiry, "EnquiryAttribute")
        sub(attribute, "EnqAttribTypeCode", mapping.code)
        if mapping.type == "code":
            sub(attribute, "EnqAttribValueCode", mapping.values.get(text, text))
        elif mapping.type == "date":
            sub(attribute, "EnqAttribDateValue", text)
        else:
            sub(attribute, "EnqAttribStringValue", text[:2000])

    def _local(self, moment: datetime) -> str:
        """Confirm ignores zone offsets: send the wall-clock time in the council's zone, without an offset."""
        return moment.astimezone(self.zone).strftime("%Y-%m-%dT%H:%M:%S")

    # -- the wire --------------------------------------------------------------------------------------------------

    def _call(self, operations: list[etree._Element], timeout: float) -> list[OperationResult]:
        password = os.environ.get(self.config.password_env)
        if password is None:
            raise PermanentDeliveryError(
                "confirm_password_missing", f"environment variable {self.config.password_env} is not set",
            )
        body = request_envelope(self.config.username, password, self.config.database_id, operations)
        try:
            _response, root = soap_client.post(self._client, str(self.config.url), body, timeout=timeout,
                                               system="Confirm", key="confirm")
            results = operation_results(root)
        except SoapFault as fault:
            raise self._refusal(fault.reason, soap=True) from fault
        except MalformedXml as exc:
            raise TransientDeliveryError("malformed_answer", str(exc)) from exc
        except RequestFault as fault:
            refusal = self._refusal(fault.reason)
            if len(operations) == 1 and refusal.reason != "confirm_authentication":
                # Confirm often reports a lone operation's fault for the whole request: it is that operation's
                # answer, and the caller decides what it means (a stale update, an enquiry not found, ...).
                return [OperationResult(None, fault.reason)]
            raise refusal from fault
        if len(results) != len(operations):
            raise TransientDeliveryError("malformed_answer",
                                         f"{len(operations)} operation(s) sent, {len(results)} answered")
        return results

    @staticmethod
    def _refusal(reason: str, *, soap: bool = False) -> PermanentDeliveryError | TransientDeliveryError:
        return soap_client.classify_fault(reason, system="Confirm", key="confirm", refused="the enquiry", soap=soap)

    def close(self) -> None:
        self._client.close()
