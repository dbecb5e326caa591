"""The council's service catalogue as Open311 shows it: the service list, each service's definition, and the
attributes a report for it may carry."""

from __future__ import annotations

from typing import Any

from broker.config.models import AttributeDatatype, ServiceAttribute, ServiceCatalogue


def attributes_of(catalogue: ServiceCatalogue, service_code: str) -> list[ServiceAttribute]:
    """The shared attributes first, then the service's own; a service's own declaration of a shared code takes
    the shared one's place."""
    own = {attribute.code: attribute for attribute in catalogue.services[service_code].attributes}
    shared = [own.pop(attribute.code, attribute) for attribute in catalogue.open311.attributes]
    return [*shared, *own.values()]


def service_list(catalogue: ServiceCatalogue) -> list[dict[str, Any]]:
    """``GET services``: one entry per service, in the order of ``services.yaml``."""
    return [{
        "service_code": code,
        "service_name": service.name,
        "description": service.description or service.name,
        "metadata": bool(attributes_of(catalogue, code)),
        # Every report is answered with its service_request_id at once, whatever the service.
        "type": "realtime",
        "keywords": ", ".join(service.keywords),
        "group": service.group or "",
    } for code, service in catalogue.services.items()]


def service_definition(catalogue: ServiceCatalogue, service_code: str) -> dict[str, Any]:
    """``GET services/{code}``: the attributes, in the order they are asked (``order`` counts from 1)."""
    return {
        "service_code": service_code,
        "attributes": [{
            "variable": attribute.variable,
            "code": attribute.code,
            "datatype": attribute.datatype.value,
            "required": attribute.required,
            "datatype_description": attribute.datatype_description,
            "order": order,
            "description": attribute.description,
            **({"automated": attribute.automated.value} if attribute.automated else {}),
            **({"values": [{"key": key, "name": name} for key, name in attribute.values.items()]}
               if attribute.datatype in (AttributeDatatype.singlevaluelist, AttributeDatatype.multivaluelist)
               else {}),
        } for order, attribute in enumerate(attributes_of(catalogue, service_code), 1)],
    }
