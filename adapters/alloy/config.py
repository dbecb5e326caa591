"""Settings of an Alloy target (``settings:`` in routes.yaml) and its mapping file (``mappings/<target>.yaml``)."""

from __future__ import annotations

from typing import Any

from pydantic import AnyHttpUrl, Field

from broker.sdk import CaseStatus, Settings


class AlloyConfig(Settings):
    url: AnyHttpUrl = Field(description="The API's base URL, ending /api/ (e.g. https://api.uk.alloyapp.io/api/).")
    api_key_env: str = Field(pattern=r"^[A-Z_][A-Z0-9_]*$",
                             description="Environment variable holding the API key (sent as a Bearer token).")
    design_code: str = Field(min_length=1, description="The design new items are made of, e.g. "
                                                       "designs_customerRequests.")
    collection: str = Field("Live", min_length=1, description="The collection new items belong to.")
    reference_attribute: str = Field(min_length=1, description="The string attribute that holds our reference "
                                                               "(how an item is found again: query-before-create).")
    description_attribute: str = Field(min_length=1, description="The attribute the case's description goes in.")
    status_attribute: str = Field(min_length=1, description="The link attribute holding the item's status (a list "
                                                            "of one status item id).")
    notes_attribute: str | None = Field(None, description="A text attribute notes and status reasons are appended "
                                                          "to; unset: notes are not sent.")
    geometry_attribute: str = Field("attributes_itemsGeometry", description="The GeoJSON geometry attribute.")
    timeout_seconds: float = Field(30.0, gt=0, le=600, description="Creates and updates.")
    lookup_timeout_seconds: float = Field(60.0, gt=0, le=900, description="Searches and item logs.")
    page_size: int = Field(100, ge=1, le=1000, description="Items per page of a search.")
    max_response_bytes: int = Field(10 * 1024 * 1024, ge=64 * 1024, le=1024 * 1024 * 1024,
                                    description="Largest answer read, on the wire and decompressed.")
    ca_file: str | None = Field(None, description="PEM file of the certificate authorities to trust.")
    client_cert_file: str | None = Field(None, description="PEM client certificate, for mutual TLS.")
    client_key_file: str | None = Field(None, description="PEM key of the client certificate.")


class AlloyService(Settings):
    attributes: dict[str, Any] = Field(
        default_factory=dict,
        description="Attribute code -> value set on every item made for this service (a category link, say: "
                    "{attributes_customerRequestsCategory: [<item id>]}).",
    )


class AlloyMapping(Settings):
    """Canonical codes to Alloy's, and Alloy's status items back to canonical statuses."""

    services: dict[str, AlloyService] = Field(description="Canonical service code -> what its items are given.")
    attributes: dict[str, str] = Field(default_factory=dict,
                                       description="Canonical case attribute -> Alloy attribute code.")
    statuses: dict[str, CaseStatus] = Field(default_factory=dict,
                                            description="Alloy status item id -> canonical status (coming back).")
    status_items: dict[CaseStatus, str] = Field(default_factory=dict,
                                                description="Canonical status -> Alloy status item id (sent with a "
                                                            "status change).")
