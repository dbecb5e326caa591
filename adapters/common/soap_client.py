"""One SOAP call over HTTP, with every way it can go wrong turned into a classified delivery error.

Transport failures, timeouts and HTTP 5xx without a SOAP fault are transient; HTTP 401/403 refuse the credentials
and HTTP 415 the content type (both permanent); an answer carrying a DTD or entities is refused unread
(permanent); an answer that is not XML is transient. A SOAP fault is raised as :class:`SoapFault` for the adapter
to judge with :func:`classify_fault`, because only the adapter knows its server's wording.
"""

from __future__ import annotations

import httpx
from lxml import etree

from adapters.common.soap import MalformedXml, SoapFault, UnsafeXml, parse_xml, raise_for_fault
from broker.errors import PermanentDeliveryError, TransientDeliveryError

EXCERPT = 2000
#: How servers word a refusal of the credentials.
AUTHENTICATION_WORDS = ("authenticat", "log on", "logon", "login", "password", "credential")
#: How servers word a refusal of the data itself, whichever way the fault comes back.
VALIDATION_WORDS = ("validate ", "is not valid", "not a valid", "invalid", "is required", "longer than")


def post(client: httpx.Client, url: str, body: bytes, *, timeout: float, system: str, key: str,
         headers: dict[str, str] | None = None) -> tuple[httpx.Response, etree._Element]:
    """POST one SOAP request; return the response and its parsed document.

    ``system`` names the server in messages (``Confirm``); ``key`` prefixes machine-readable reasons
    (``confirm_authentication``). Raises SoapFault for a SOAP fault, DeliveryErrors for everything else.
    """
    try:
        response = client.post(url, content=body, timeout=timeout, headers=headers)
    except httpx.TimeoutException as exc:
        raise TransientDeliveryError("timeout", f"{system} did not answer within {timeout:.0f}s") from exc
    except httpx.TransportError as exc:
        raise TransientDeliveryError("connection", f"{type(exc).__name__}: {exc}") from exc
    has_fault = b"Fault" in response.content
    if response.status_code >= 500 and not has_fault:
        raise TransientDeliveryError(f"http_{response.status_code}", f"HTTP {response.status_code} from {system}",
                                     response_excerpt=response.text[:EXCERPT])
    if response.status_code in (401, 403) and not has_fault:
        raise PermanentDeliveryError(f"{key}_authentication",
                                     f"{system} refused the credentials (HTTP {response.status_code})")
    if response.status_code == 415:
        raise PermanentDeliveryError("http_415", f"{system} refused the content type (SOAP 1.1 expected)")
    try:
        root = parse_xml(response.content)
    except UnsafeXml as exc:
        raise PermanentDeliveryError("unsafe_xml", f"{system}'s answer was refused unread: {exc}") from exc
    except MalformedXml as exc:
        raise TransientDeliveryError("malformed_answer", str(exc), response_excerpt=response.text[:EXCERPT]) from exc
    raise_for_fault(root)
    return response, root


def classify_fault(reason: str, *, system: str, key: str, refused: str,
                   soap: bool = False) -> PermanentDeliveryError | TransientDeliveryError:
    """A server's refusal as a delivery error: credentials and data refusals are permanent; any other SOAP fault
    (the server failing, not judging the data) is transient. ``refused`` says what was refused (``the enquiry``)."""
    lowered = reason.lower()
    if any(word in lowered for word in AUTHENTICATION_WORDS):
        return PermanentDeliveryError(f"{key}_authentication", f"{system} refused the credentials: {reason}")
    if soap and not any(word in lowered for word in VALIDATION_WORDS):
        return TransientDeliveryError(f"{key}_soap_fault", reason)
    return PermanentDeliveryError(f"{key}_fault", f"{system} refused {refused}: {reason}")


__all__ = ["SoapFault", "classify_fault", "post"]
