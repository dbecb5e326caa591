"""Canonical cases to Uniform service requests, and their progress back, over Uniform's SOAP connector."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

import structlog
from lxml import etree
from pydantic import ValidationError

from adapters.common.grid import grid_reference
from adapters.common.soap import xml_text
from adapters.common.soap_client import NotOffered
from adapters.uniform.code_lists import CHECKED_LISTS
from adapters.uniform.config import ServiceMapping, UniformConfig, UniformMapping
from adapters.uniform.session import UniformSession
from adapters.uniform.soap import sub
from broker.sdk import (
    Adapter,
    Capability,
    Case,
    CaseCreated,
    DeliveryError,
    DeliveryOutcome,
    DeliveryRequest,
    IdentifiedReporter,
    LobStatusChange,
    PermanentDeliveryError,
    Person,
    RepresentativeReporter,
    TransientDeliveryError,
)

log = structlog.get_logger("casebridge.uniform")

#: How Uniform says that no service request has the reference asked for.
_NOT_FOUND = ("no service request", "not found", "does not exist", "no matching")
#: Reasons of a GetCnCodeList that Uniform answered with a fault: it does not offer that list.
_REFUSED_LIST = frozenset({"uniform_fault", "uniform_soap_fault"})

Problems = list[tuple[tuple[str | int, ...], str]]


@dataclass(frozen=True)
class RequestState:
    """Where a service request stands in Uniform (``AdministrationDetails``)."""

    reference: str
    status_code: str
    closing_action: str | None
    alternative_references: tuple[tuple[str, str], ...] = ()

    @property
    def update_id(self) -> str:
        """Uniform reports no times or log numbers for changes: the state itself identifies the change."""
        return f"{self.reference}:{self.status_code}:{self.closing_action or ''}"


class UniformAdapter(Adapter[UniformConfig, UniformMapping]):
    """Submits service requests, finds them again by our reference, and reports their status changes."""

    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.create, Capability.lookup, Capability.poll_updates}
    )

    def __init__(self, target: str, config: UniformConfig | dict[str, Any],
                 mapping: UniformMapping | dict[str, Any] | None = None) -> None:
        super().__init__(target, config, mapping)
        self.zone = ZoneInfo(self.config.time_zone)
        self.session = UniformSession(target, self.config)

    @classmethod
    def unknown_code_problems(cls, mapping: dict[str, Any], lookups: dict[str, Any]) -> Problems:
        try:
            codes = UniformMapping.model_validate(mapping)
        except ValidationError:
            return []  # reported by mapping_problems
        # A list missing from the saved file is not judged: an older file may predate it.
        complaint_types, how, customer_types, closing = (
            set(lookups[name] or []) if name in lookups else None for name in CHECKED_LISTS)
        problems: Problems = []
        if complaint_types is not None:
            problems += [(("services", service, "complaint_type"),
                          f"Uniform has no complaint type {entry.complaint_type!r} in SRRECTYPE")
                         for service, entry in codes.services.items() if entry.complaint_type not in complaint_types]
        if how is not None:
            problems += [(("how_received", channel), f"Uniform has no code {code!r} in SRRECHOW")
                         for channel, code in codes.how_received.items() if code not in how]
        if customer_types is not None:
            for field in ("customer_type", "representative_customer_type"):
                code = getattr(codes, field)
                if code is not None and code not in customer_types:
                    problems.append(((field,), f"Uniform has no code {code!r} in SRCUSTTYPE"))
        if closing is not None:
            problems += [(("closing_actions", code), f"Uniform has no code {code!r} in SRCLOSEACT")
                         for code in codes.closing_actions if code not in closing]
        return problems

    # -- delivery ------------------------------------------------------------------------------------------------

    def deliver(self, request: DeliveryRequest) -> DeliveryOutcome:
        event = request.event
        if not isinstance(event, CaseCreated):
            raise PermanentDeliveryError(
                "uniform_create_only",
                f"target {self.target!r} takes new cases only; a {event.event_type.value} is not sent to Uniform "
                "(route only case.created to a Uniform target)",
            )
        if request.external_ref:  # created by an earlier delivery: nothing to do twice
            return DeliveryOutcome(external_ref=request.external_ref, detail={"already_created": True})
        service = self._service(event.case.service_code)
        submitted = self._submitted_request(event, service, request.our_reference)
        answer = self.session.call(service.operation, submitted, timeout=self.config.timeout_seconds)
        if (answer.findtext("TransactionSuccess") or "").strip().lower() != "true":
            briefs = [(brief.text or "").strip() for brief in answer.iterfind(".//TransactionMessage/MessageBrief")]
            raise self.session.refusal("; ".join(briefs) or "TransactionSuccess is not true")
        reference = (answer.findtext("ServiceRequestIdentification/ReferenceValue") or "").strip()
        if not reference:
            raise TransientDeliveryError("uniform_no_reference", f"{service.operation} answered without a "
                                                                 "ReferenceValue")
        detail: dict[str, Any] = {"reference_value": reference, "operation": service.operation,
                                  "technical_key": answer.findtext("ServiceRequestIdentification/"
                                                                   "ServiceRequestTechnicalKey")}
        try:  # the request's first state is ours, not news: polling must not report it back to the CRM
            state = self.request_state(reference)
            if state is not None:
                detail["lob_update_id"] = state.update_id
        except DeliveryError as exc:
            log.info("uniform.first_state_unread", target=self.target, reason=exc.reason)
        return DeliveryOutcome(external_ref=reference, detail=detail)

    def find_delivered(self, request: DeliveryRequest) -> DeliveryOutcome | None:
        """For a create: the service request carrying our reference, if an earlier attempt made one.

        ``GetGeneralServiceRequestByReferenceValue`` asked for our reference is a search Uniform offers: a request
        it finds is ours, whether or not its answer echoes the alternative references (the documented answer need
        not); only an echo that lists references without ours says it is someone else's. Its answer that there is
        no such request is authoritative (None: create it); a search that failed is a TransientDeliveryError.
        """
        if not isinstance(request.event, CaseCreated):
            return None
        try:
            state = self.request_state(request.our_reference)
        except TransientDeliveryError as exc:
            # Creating now could make a second request if the first did land: ask again later instead.
            raise TransientDeliveryError("uniform_lookup_failed",
                                         f"could not look the service request up by our reference: {exc.message}",
                                         ) from exc
        if state is None or not self._carries_ours(state, request.our_reference):
            return None
        return DeliveryOutcome(external_ref=state.reference,
                               detail={"found_by_reference": True, "reference_value": state.reference,
                                       "lob_update_id": state.update_id})

    def _carries_ours(self, state: RequestState, our_reference: str) -> bool:
        """Whether a request the search found by our reference is ours: yes, unless the answer echoes alternative
        references and ours (of our type, or of none given) is not among them."""
        if not state.alternative_references:
            return True
        return any(value == our_reference and reference_type in ("", self.config.reference_type)
                   for reference_type, value in state.alternative_references)

    # -- reading back ----------------------------------------------------------------------------------------------

    def request_state(self, reference: str) -> RequestState | None:
        """``GetGeneralServiceRequestByReferenceValue``; None when Uniform has no such request."""
        try:
            answer = self.session.call("GetGeneralServiceRequestByReferenceValue", _text("ReferenceValue", reference),
                                       timeout=self.config.lookup_timeout_seconds)
        except DeliveryError as exc:
            if any(phrase in exc.message.lower() for phrase in _NOT_FOUND):
                return None
            raise
        identification = answer.find(".//ServiceRequestIdentification")
        found = identification.findtext("ReferenceValue") if identification is not None else None
        if not found:
            return None
        administration = answer.find(".//AdministrationDetails")
        closing = administration.findtext("ClosingActionCode") if administration is not None else None
        return RequestState(
            reference=found.strip(),
            status_code=(administration.findtext("StatusCode") or "").strip() if administration is not None else "",
            closing_action=closing.strip() or None if closing else None,
            alternative_references=tuple(
                ((alternative.findtext("ReferenceType") or "").strip(),
                 (alternative.findtext("ReferenceValue") or "").strip())
                for alternative in identification.iterfind("AlternativeReferences/AlternativeReference")
            ) if identification is not None else (),
        )

    def changed_references(self, since: datetime) -> list[str]:
        """``GetChangedServiceRequestRefVals``: requests changed since a moment (Uniform has no end bound)."""
        answer = self.session.call("GetChangedServiceRequestRefVals", _text("LastUpdated", self._local(since)),
                                   timeout=self.config.lookup_timeout_seconds)
        references = ((element.text or "").strip() for element in answer.iter("ReferenceValue"))
        return list(dict.fromkeys(reference for reference in references if reference))

    def status_changes(self, since: datetime, until: datetime) -> list[LobStatusChange]:
        """The current state of every request changed since ``since``, as canonical changes identified by
        (reference, status, closing action): reading the same state again is never a second change."""
        changes = []
        now = datetime.now(UTC)
        for reference in self.changed_references(since):
            state = self.request_state(reference)
            if state is None:
                continue
            canonical = self.mapping.closing_actions.get(state.closing_action or "") or \
                self.mapping.statuses.get(state.status_code)
            if canonical is None:
                log.warning("uniform.unmapped_status", target=self.target, status_code=state.status_code,
                            closing_action=state.closing_action)
                continue
            changes.append(LobStatusChange(
                reference=state.reference, update_id=state.update_id, status=canonical,
                external_status_code="/".join(filter(None, (state.status_code, state.closing_action))),
                occurred_at=min(until, now),
            ))
        return changes

    def code_list(self, name: str) -> dict[str, str]:
        """``GetCnCodeList``: a code list's values and texts."""
        answer = self.session.call("GetCnCodeList", _text("ListName", name),
                                   timeout=self.config.lookup_timeout_seconds)
        return {(code.findtext("CodeValue") or "").strip(): (code.findtext("CodeText") or "").strip()
                for code in answer.iter("CnCode")}

    def saved_lookups(self) -> tuple[dict[str, list[str]], list[NotOffered]]:
        """The code lists ``broker check`` uses, in the shape kept in ``<target>.lookups.yaml``, as far as this
        Uniform offers them, and the lists it does not offer (left out of the file, so ``broker check`` does not
        judge them). A call that fails, or credentials refused, fail the whole."""
        saved: dict[str, list[str]] = {}
        not_offered: list[NotOffered] = []
        for name in CHECKED_LISTS:
            try:
                saved[name] = sorted(self.code_list(name))
            except DeliveryError as exc:
                if exc.reason not in _REFUSED_LIST:
                    raise
                log.warning("uniform.code_list_not_offered", target=self.target, list=name, reason=exc.message)
                not_offered.append(NotOffered(name, exc.message))
        return saved, not_offered

    # -- building the request ----------------------------------------------------------------------------------

    def _service(self, service_code: str) -> ServiceMapping:
        service = self.mapping.services.get(service_code)
        if service is None:
            raise PermanentDeliveryError(
                "unmapped_service_code",
                f"service code {service_code!r} has no Uniform complaint type in the mapping of target "
                f"{self.target!r}",
            )
        return service

    def _submitted_request(self, event: CaseCreated, service: ServiceMapping, our_reference: str) -> etree._Element:
        case = event.case
        how = self.mapping.how_received.get(case.channel.value)
        if how is None:
            raise PermanentDeliveryError("unmapped_channel", f"channel {case.channel.value!r} has no "
                                         f"HowComplaintReceived code in the mapping of target {self.target!r}")
        submitted = etree.Element(service.operation.replace("Submit", "Submitted", 1))
        alternative = sub(sub(sub(submitted, "ServiceRequestIdentification"), "AlternativeReferences"),
                          "AlternativeReference")
        sub(alternative, "ReferenceType", self.config.reference_type)
        sub(alternative, "ReferenceValue", our_reference)
        sub(submitted, "ComplaintType", service.complaint_type)
        submitted.append(self._site(case))
        sub(submitted, "NatureOfComplaint", case.description)
        sub(submitted, "HowComplaintReceived", how)
        customers = self._customers(case)
        if len(customers):
            submitted.append(customers)
        sub(submitted, "TimeReceived", self._local(event.occurred_at))
        xtra = etree.Element("XtraValues")
        for name, value in case.attributes.items():
            field = self.mapping.xtra_fields.get(name)
            if field is None or value in (None, "", []):
                continue  # unmapped answers stay in our store
            entry = sub(xtra, "SR_Xtra")
            sub(entry, "FieldName", field)
            text = ",".join(value) if isinstance(value, list) else str(value)
            sub(entry, "FieldValue", text.lower() if isinstance(value, bool) else text)
        if len(xtra):
            submitted.append(xtra)
        return submitted

    def _site(self, case: Case) -> etree._Element:
        site = etree.Element("SubmittedSiteLocation")
        if case.location.uprn:
            sub(site, "UPRN", case.location.uprn)
            return site
        grid = grid_reference(case.location)
        if grid is None:
            raise PermanentDeliveryError("no_location", "Uniform needs a UPRN or a map reference (easting/northing "
                                         "or latitude/longitude); the case gives only an address or postcode")
        sub(site, "MapEast", f"{grid[0]:.0f}")
        sub(site, "MapNorth", f"{grid[1]:.0f}")
        return site

    def _customers(self, case: Case) -> etree._Element:
        customers = etree.Element("Customers")
        reporter = case.reporter
        if isinstance(reporter, IdentifiedReporter):
            self._customer(customers, reporter.person, self.mapping.customer_type)
        elif isinstance(reporter, RepresentativeReporter):
            self._customer(customers, reporter.on_behalf_of, self.mapping.customer_type)
            if self.mapping.representative_customer_type:
                self._customer(customers, reporter.representative, self.mapping.representative_customer_type)
        return customers  # anonymous reports send no customer

    def _customer(self, customers: etree._Element, person: Person, type_code: str | None) -> None:
        details = sub(sub(customers, "SubmittedCustomer"), "SubmittedCustomerDetails")
        if type_code:
            sub(details, "CustomerTypeCode", type_code)
        if person.name:
            sub(sub(details, "CustomerName"), "FullName", person.name)
        contacts = etree.Element("SubmittedContactDetails")
        for code, address in ((self.mapping.contact_types.email, person.email),
                              (self.mapping.contact_types.phone, person.phone)):
            if address:
                contact = sub(contacts, "SubmittedContactDetail")
                sub(contact, "ContactTypeCode", code)
                sub(contact, "ContactAddress", address)
        if len(contacts):
            details.append(contacts)

    def _local(self, moment: datetime) -> str:
        """Uniform drops time zones: send the wall-clock time in the council's zone, without an offset."""
        return moment.astimezone(self.zone).strftime("%Y-%m-%dT%H:%M:%S")

    def close(self) -> None:
        self.session.close()


def _text(tag: str, text: str) -> etree._Element:
    element = etree.Element(tag)
    element.text = xml_text(text)
    return element
