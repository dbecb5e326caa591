"""Canonical cases to Confirm enquiries and back, over Confirm's SOAP connector web service."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

import httpx
import structlog
from lxml import etree
from pydantic import BaseModel, ValidationError

from adapters.common import soap_client
from adapters.common.grid import grid_reference
from adapters.common.soap import MalformedXml, SoapFault
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
from broker.adapter import Adapter, Capability, DeliveryOutcome, DeliveryRequest, LobStatusChange
from broker.errors import PermanentDeliveryError, TransientDeliveryError
from broker.model.case import Case, CaseStatus, IdentifiedReporter, Person, RepresentativeReporter
from broker.model.events import (
    AnyEvent,
    CaseClosed,
    CaseCreated,
    CaseNoteAdded,
    CaseStatusChanged,
    CaseUpdated,
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


@dataclass(frozen=True)
class StatusChangeRecord:
    """One entry of Confirm's status log, as GetEnquiryStatusChanges reports it."""

    enquiry_number: str
    log_number: str
    status_code: str
    logged_time: str
    notes: str | None


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


class ConfirmAdapter(Adapter[ConfirmConfig]):
    """Creates enquiries (``NewEnquiry``), updates them (``EnquiryUpdate``) and finds them by our reference."""

    config_model: ClassVar[type[BaseModel]] = ConfirmConfig
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.create, Capability.update, Capability.lookup, Capability.poll_updates}
    )

    def __init__(self, target: str, config: ConfirmConfig, mapping: dict[str, Any]) -> None:
        super().__init__(target, config, mapping)
        self.codes = ConfirmMapping.model_validate(mapping)
        self.zone = ZoneInfo(config.time_zone)
        self._client = httpx.Client(headers={"Content-Type": CONTENT_TYPE, "SOAPAction": SOAP_ACTION})

    @classmethod
    def mapping_problems(cls, mapping: dict[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
        try:
            ConfirmMapping.model_validate(mapping)
        except ValidationError as exc:
            return [(tuple(error["loc"]), error["msg"]) for error in exc.errors()]
        return []

    @classmethod
    def unknown_code_problems(cls, mapping: dict[str, Any],
                              lookups: dict[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
        try:
            codes = ConfirmMapping.model_validate(mapping)
        except ValidationError:
            return []  # reported by mapping_problems
        services: dict[str, list[str]] = lookups.get("services") or {}
        statuses = set(lookups.get("statuses") or [])
        attributes = set(lookups.get("attributes") or [])
        problems: list[tuple[tuple[str | int, ...], str]] = _customer_code_problems(codes, lookups)
        problems += _attribute_value_problems(codes, lookups)
        for canonical, pair in codes.services.items():
            if pair.service not in services:
                problems.append((("services", canonical, "service"), f"Confirm has no service code {pair.service!r}"))
            elif pair.subject not in services[pair.service]:
                problems.append((("services", canonical, "subject"),
                                 f"Confirm service {pair.service!r} has no subject code {pair.subject!r}"))
        for canonical, attribute in codes.attributes.items():
            if attribute.code not in attributes:
                problems.append((("attributes", canonical, "code"),
                                 f"Confirm has no enquiry attribute type {attribute.code!r}"))
        for canonical, code in codes.status_codes.items():
            if code not in statuses:
                problems.append((("status_codes", canonical), f"Confirm has no enquiry status code {code!r}"))
        for code in codes.statuses:
            if code not in statuses:
                problems.append((("statuses", code), f"Confirm has no enquiry status code {code!r}"))
        return problems

    def saved_lookups(self) -> dict[str, Any]:
        """``GetEnquiryLookups`` and ``GetCustomerLookups`` in the shape kept in ``<target>.lookups.yaml`` for
        ``broker check``."""
        lookups = self.lookups()
        customer = self.customer_lookups()

        def texts(parent: etree._Element, path: str) -> list[str]:
            return sorted(element.text or "" for element in parent.iterfind(path))

        attribute_types = {attribute.findtext("EnqAttribTypeCode") or "": attribute
                           for attribute in lookups.iterfind("EnquiryAttributeType")}
        return {
            "services": {service.findtext("ServiceCode") or "": texts(service, "EnquirySubject/SubjectCode")
                         for service in lookups.iterfind("TypeOfService")},
            "statuses": texts(lookups, "EnquiryStatus/EnqStatusCode"),
            "attributes": texts(lookups, "EnquiryAttributeType/EnqAttribTypeCode"),
            "attribute_flags": {code: attribute.findtext("EnqAttribTypeFlag") or ""
                                for code, attribute in attribute_types.items()},
            "attribute_values": {code: texts(attribute, "EnquiryAttributeValue/EnqAttribValueCode")
                                 for code, attribute in attribute_types.items()
                                 if attribute.find("EnquiryAttributeValue") is not None},
            "enquiry_methods": texts(customer, "EnquiryMethod/EnquiryMethodCode"),
            "customer_types": texts(customer, "CustomerType/CustomerTypeCode"),
            "points_of_contact": texts(customer, "PointOfContact/PointOfContactCode"),
        }

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
        number = result.element.findtext("Enquiry/EnquiryNumber") if result.element is not None else None
        if not number:
            raise TransientDeliveryError("confirm_no_enquiry_number", "NewEnquiry answered without an EnquiryNumber")
        detail: dict[str, Any] = {"enquiry_number": number}
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
        log_number = result.element.findtext("Enquiry/EnquiryLogNumber") if result.element is not None else None
        detail: dict[str, Any] = {"enquiry_log_number": log_number}
        if log_number:
            detail["lob_update_id"] = f"{enquiry_number}:{log_number}"  # the poll will not echo it back
        if resubmitted:
            detail["resubmitted_without_time_and_status"] = True
        status = event.change.status.value if isinstance(event, CaseStatusChanged | CaseClosed) else None
        if status is not None and status not in self.codes.status_codes:
            # Sent as notes only: the audit shows that Confirm's status was left as it was.
            detail["status_not_mapped"] = status
            log.warning("confirm.status_not_mapped", target=self.target, status=status)
        return DeliveryOutcome(external_ref=enquiry_number, detail=detail)

    def find_delivered(self, request: DeliveryRequest) -> DeliveryOutcome | None:
        """For a create: an enquiry already carrying our reference (query-before-create)."""
        if not isinstance(request.event, CaseCreated):
            return None
        operation = etree.Element("GetEnquiry")
        if self.config.reference_element == "ExternalSystemReference":
            sub(operation, "ExternalSystemNumber", self.config.external_system_number)
        sub(operation, self.config.reference_element, request.our_reference)
        [result] = self._call([operation], self.config.lookup_timeout_seconds)
        if result.fault is not None:
            if any(phrase in result.fault.lower() for phrase in _NOT_FOUND):
                return None
            # Creating now could make a second enquiry if the first did land: ask again later instead.
            raise TransientDeliveryError("confirm_lookup_failed",
                                         f"could not look the enquiry up by our reference: {result.fault}")
        number = result.element.findtext("Enquiry/EnquiryNumber") if result.element is not None else None
        return DeliveryOutcome(external_ref=number, detail={"found_by_reference": True}) if number else None

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
            for log in updated.findall("EnquiryStatusLog"):
                changes.append(StatusChangeRecord(
                    enquiry_number=updated.findtext("EnquiryNumber") or "",
                    log_number=log.findtext("EnquiryLogNumber") or "",
                    status_code=log.findtext("EnquiryStatusCode") or "",
                    logged_time=log.findtext("LoggedTime") or "",
                    notes=log.findtext("StatusLogNotes"),
                ))
        return changes

    def status_changes(self, since: datetime, until: datetime) -> list[LobStatusChange]:
        """Confirm's status log entries as canonical changes; codes without a mapping are left out (and logged)."""
        changes = []
        for record in self.status_log_changes(since, until):
            canonical = self.codes.statuses.get(record.status_code)
            if canonical is None:
                log.warning("confirm.unmapped_status", target=self.target, status_code=record.status_code)
                continue
            logged = datetime.fromisoformat(record.logged_time.strip())
            changes.append(LobStatusChange(
                reference=record.enquiry_number,
                update_id=f"{record.enquiry_number}:{record.log_number}",
                status=CaseStatus(canonical),
                external_status_code=record.status_code,
                occurred_at=logged.replace(tzinfo=self.zone) if logged.tzinfo is None else logged,
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
        return self._lookup_list("GetEnquiryLookups")

    def customer_lookups(self) -> etree._Element:
        """``GetCustomerLookups``: enquiry method, customer type and point-of-contact codes."""
        return self._lookup_list("GetCustomerLookups")

    def _lookup_list(self, operation: str) -> etree._Element:
        [result] = self._call([etree.Element(operation)], self.config.lookup_timeout_seconds)
        if result.fault is not None or result.element is None:
            raise PermanentDeliveryError("confirm_fault", result.fault or f"no {operation} in the answer")
        return result.element

    # -- building operations ---------------------------------------------------------------------------------------

    def _service_subject(self, service_code: str) -> ServiceSubject:
        codes = self.codes.services.get(service_code)
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
            status = self.codes.status_codes.get(event.change.status.value)
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
        method = self.codes.enquiry_methods.get(case.channel.value)
        if method:
            sub(customer, "EnquiryMethodCode", method)
        if self.codes.point_of_contact:
            sub(customer, "PointOfContactCode", self.codes.point_of_contact)
        if self.codes.customer_type:
            sub(customer, "CustomerTypeCode", self.codes.customer_type)

    def _attribute(self, enquiry: etree._Element, name: str, value: Any) -> None:
        mapping = self.codes.attributes.get(name)
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
                                               system="Confirm", key="confirm",
                                               max_bytes=self.config.max_response_bytes)
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
