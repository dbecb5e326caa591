"""Settings of a Uniform target (``settings:`` in routes.yaml) and its mapping file (``mappings/uniform.yaml``)."""

from __future__ import annotations

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field

from broker.sdk import CaseStatus


class UniformConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: AnyHttpUrl = Field(description="The service request connector endpoint (…/ServiceRequestConnector.asmx).")
    username: str = Field(min_length=1, description="UniformUserName.")
    password_env: str = Field(pattern=r"^[A-Z_][A-Z0-9_]*$",
                              description="Environment variable holding UniformPassword (never the password itself).")
    database_id: str = Field(min_length=1, description="Uniform's DatabaseID.")
    reference_type: str = Field("CASEBRIDGE", min_length=1, max_length=20,
                                description="ReferenceType of the AlternativeReference carrying our reference.")
    timeout_seconds: float = Field(60.0, gt=0, le=900, description="Logon and submit calls.")
    lookup_timeout_seconds: float = Field(120.0, gt=0, le=900, description="Look-ups, changes and code lists.")
    time_zone: str = Field("Europe/London", description="Uniform drops time zones: times are sent as local time.")
    max_response_bytes: int = Field(
        10 * 1024 * 1024, ge=64 * 1024, le=1024 * 1024 * 1024,
        description="Largest answer read, on the wire and decompressed; a larger one fails as response_too_large.",
    )


class ServiceMapping(BaseModel):
    model_config = ConfigDict(extra="forbid")

    complaint_type: str = Field(min_length=1, description="ComplaintType (code list SRRECTYPE).")
    operation: str = Field("SubmitGeneralServiceRequest", pattern=r"^Submit[A-Z][A-Za-z]*ServiceRequest$",
                           description="The submit operation: the general one or a kind's own, e.g. "
                                       "SubmitDogServiceRequest.")


class ContactTypes(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: str = Field("EMAIL", min_length=1)
    phone: str = Field("PHONEH", min_length=1)


class UniformMapping(BaseModel):
    """Canonical codes to Uniform's, and Uniform's statuses and closing actions back to canonical statuses."""

    model_config = ConfigDict(extra="forbid")

    services: dict[str, ServiceMapping] = Field(description="Canonical service code -> complaint type (+ operation).")
    how_received: dict[str, str] = Field(description="Channel -> HowComplaintReceived (code list SRRECHOW).")
    customer_type: str | None = Field(None, description="CustomerTypeCode (SRCUSTTYPE) for the resident.")
    representative_customer_type: str | None = Field(
        None, description="CustomerTypeCode for a councillor or agent reporting for a resident; unset: not sent.",
    )
    contact_types: ContactTypes = Field(default_factory=ContactTypes)
    xtra_fields: dict[str, str] = Field(default_factory=dict,
                                        description="Canonical attribute -> SR_Xtra FieldName.")
    statuses: dict[str, CaseStatus] = Field(default_factory=dict,
                                            description="Uniform StatusCode -> canonical status.")
    closing_actions: dict[str, CaseStatus] = Field(
        default_factory=dict,
        description="ClosingActionCode (SRCLOSEACT) -> canonical status; wins over the status when present.",
    )
