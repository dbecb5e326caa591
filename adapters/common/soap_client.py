"""One SOAP call over HTTP, with every way it can go wrong turned into a classified delivery error.

Sent through the SDK's one HTTP client (:class:`broker.sdk.HttpClient`): transport failures, timeouts and HTTP 5xx
without a SOAP fault are transient; a call that cannot have reached the server (a refused connection, a failed name
lookup, a connect timeout, HTTP 408, 503 or 429 without a SOAP body) says so with ``may_have_landed=False``. HTTP
401/403 refuse the credentials and HTTP 415 the content type; any other 4xx without a SOAP fault refuses the request
(all permanent); an answer carrying a DTD or entities is refused unread (permanent); an answer that is not XML is
transient. A SOAP fault is raised as :class:`SoapFault` for the adapter to judge with :func:`classify_fault`,
because only the adapter knows its server's wording.

Answers are read no further than the client's ``max_response_bytes``: neither the bytes on the wire nor what a gzip
or deflate content coding inflates to, so neither a huge answer nor a compression bomb can take the worker's memory.
An answer over the cap is a transient ``response_too_large`` (the call itself may have landed).
"""

from __future__ import annotations

from dataclasses import dataclass

from lxml import etree

from adapters.common.soap import MalformedXml, SoapFault, UnsafeXml, parse_xml, raise_for_fault
from broker.sdk import (
    ConnectFailed,
    HttpClient,
    HttpResponse,
    PermanentDeliveryError,
    RequestNotSent,
    RequestTimedOut,
    ResponseTooLarge,
    TransientDeliveryError,
    retry_after_seconds,
)

EXCERPT = 2000
#: The default cap on one answer, on the wire and once decompressed (each target can set its own).
DEFAULT_MAX_RESPONSE_BYTES = 10 * 1024 * 1024
#: The only content codings the client asks for, and can undo within the cap.
ACCEPT_ENCODING = "gzip, deflate"
#: How servers word a refusal of the credentials.
AUTHENTICATION_WORDS = ("authenticat", "log on", "logon", "login", "password", "credential")
#: How servers word a refusal of the data itself, whichever way the fault comes back.
VALIDATION_WORDS = ("validate ", "is not valid", "not a valid", "invalid", "is required", "longer than")


@dataclass(frozen=True)
class NotOffered:
    """An optional operation or code list a server does not offer, and the words it answered with."""

    name: str
    reason: str


def soap_http_client(max_bytes: int, headers: dict[str, str] | None = None, *, timeout: float = 60.0) -> HttpClient:
    """An HTTP client for one SOAP target: its answers capped at ``max_bytes``, on the wire and decompressed."""
    return HttpClient(timeout=timeout, headers=headers, max_response_bytes=max_bytes)


def post(client: HttpClient, url: str, body: bytes, *, timeout: float, system: str, key: str,
         headers: dict[str, str] | None = None) -> tuple[HttpResponse, etree._Element]:
    """POST one SOAP request; return the response (its headers; the body is already read) and its parsed document.

    ``system`` names the server in messages (``Confirm``); ``key`` prefixes machine-readable reasons
    (``confirm_authentication``). Raises SoapFault for a SOAP fault, DeliveryErrors for everything else.
    """
    try:
        response = client.post(url, content=body, timeout=timeout,
                               headers={"Accept-Encoding": ACCEPT_ENCODING, **(headers or {})})
    except (ConnectFailed, RequestNotSent) as exc:
        # Nothing was sent whole: the server cannot have acted on this call.
        raise TransientDeliveryError("connection", exc.message, may_have_landed=False) from exc
    except RequestTimedOut as exc:
        raise TransientDeliveryError("timeout", f"{system} did not answer within {timeout:.0f}s") from exc
    except ResponseTooLarge as exc:
        raise TransientDeliveryError(
            "response_too_large",
            f"{system}'s answer was refused unread: {exc.message}, over this target's max_response_bytes "
            f"({exc.limit:,}); the call itself may have taken effect",
        ) from exc
    content = response.content
    text = content[:EXCERPT].decode("utf-8", errors="replace")
    status = response.status_code
    has_fault = b"Fault" in content
    if status in (408, 429, 503) and b"Envelope" not in content:
        # Turned away before any work was done: trying again cannot make a second record.
        raise TransientDeliveryError(f"http_{status}", f"HTTP {status} from {system}", response_excerpt=text,
                                     retry_after=retry_after_seconds(response.header("Retry-After")),
                                     may_have_landed=False)
    if status >= 500 and not has_fault:
        raise TransientDeliveryError(f"http_{status}", f"HTTP {status} from {system}", response_excerpt=text)
    if status in (401, 403) and not has_fault:
        raise PermanentDeliveryError(f"{key}_authentication", f"{system} refused the credentials (HTTP {status})")
    if status == 415:
        raise PermanentDeliveryError("http_415", f"{system} refused the content type (SOAP 1.1 expected)")
    if 400 <= status < 500 and not has_fault:
        raise PermanentDeliveryError(f"http_{status}", f"HTTP {status} from {system}: the request was refused",
                                     response_excerpt=text)
    try:
        root = parse_xml(content)
    except UnsafeXml as exc:
        raise PermanentDeliveryError("unsafe_xml", f"{system}'s answer was refused unread: {exc}") from exc
    except MalformedXml as exc:
        raise TransientDeliveryError("malformed_answer", str(exc), response_excerpt=text) from exc
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


__all__ = ["DEFAULT_MAX_RESPONSE_BYTES", "NotOffered", "SoapFault", "classify_fault", "post", "soap_http_client"]
