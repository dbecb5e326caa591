"""Settings of a webhook target (``settings:`` under the target in ``mappings/routes.yaml``)."""

from __future__ import annotations

from pydantic import AnyHttpUrl, Field

from broker.sdk import Settings


class WebhookConfig(Settings):

    url: AnyHttpUrl = Field(description="Where events are POSTed as JSON (user-info in it is sent as Basic "
                            "authentication, and never recorded or shown).")
    timeout_seconds: float = Field(30.0, gt=0, le=600)
    max_response_bytes: int = Field(
        1_048_576, ge=1024, le=1_073_741_824,
        description="The largest answer read, as received and once decompressed; a larger one is a transient "
                    "failure, response_too_large.",
    )
    secret_env: str | None = Field(
        None,
        pattern=r"^[A-Z_][A-Z0-9_]*$",
        description="Environment variable holding the HMAC-SHA256 signing secret (never the secret itself).",
    )
    reference_field: str = Field(
        "reference", description="Key of the receiver's JSON response that holds its reference for the case."
    )
    headers: dict[str, str] = Field(default_factory=dict, description="Extra, non-secret request headers.")
    ca_file: str | None = Field(
        None, description="PEM file of the certificate authorities to trust for an https url (default: the "
                          "system's trust store).",
    )
    client_cert_file: str | None = Field(
        None, description="PEM file of a client certificate, for a receiver that asks for mutual TLS.",
    )
    client_key_file: str | None = Field(
        None, description="PEM file of the client certificate's private key (if not in client_cert_file).",
    )
    lookup_url: AnyHttpUrl | None = Field(
        None,
        description="Optional. GET <lookup_url>?idempotency_key=<event id> answers 200 with the reference if that "
                    "event was already received, 404 if not: lets a delivery resumed after a crash skip a "
                    "second POST.",
    )


class WebhookMapping(Settings):
    """The target's mapping file: code translations from canonical to the receiver's codes."""

    service_codes: dict[str, str] = Field(
        default_factory=dict, description="Canonical service code -> receiver's code. Empty: send canonical."
    )
    statuses: dict[str, str] = Field(default_factory=dict, description="Canonical status -> receiver's status.")
    unmapped_service: str = Field(
        "reject", pattern="^(reject|pass_through)$",
        description="What to do with a service code missing from service_codes (when that map is not empty).",
    )
