"""One SOAP call over HTTP, with every way it can go wrong turned into a classified delivery error.

Transport failures, timeouts and HTTP 5xx without a SOAP fault are transient; a call that cannot have reached the
server (a refused connection, a failed name lookup, a connect timeout, HTTP 503 or 429 without a SOAP body) says so
with ``may_have_landed=False``. HTTP 401/403 refuse the credentials and HTTP 415 the content type (both
permanent); an answer carrying a DTD or entities is refused unread (permanent); an answer that is not XML is
transient. A SOAP fault is raised as :class:`SoapFault` for the adapter to judge with :func:`classify_fault`,
because only the adapter knows its server's wording.

Answers are read streamed, never past ``max_bytes``: neither the bytes on the wire nor what a gzip or deflate
content coding inflates to, so neither a huge answer nor a compression bomb can take the worker's memory. An answer
over the cap is a transient ``response_too_large`` (the call itself may have landed).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import httpx
from lxml import etree

from adapters.common.soap import MalformedXml, SoapFault, UnsafeXml, parse_xml, raise_for_fault
from broker.errors import PermanentDeliveryError, TransientDeliveryError

EXCERPT = 2000
#: The default cap on one answer, on the wire and once decompressed (each target can set its own).
DEFAULT_MAX_RESPONSE_BYTES = 10 * 1024 * 1024
#: The only content codings the client asks for, and can undo within the cap.
ACCEPT_ENCODING = "gzip, deflate"
_CHUNK = 64 * 1024
#: How servers word a refusal of the credentials.
AUTHENTICATION_WORDS = ("authenticat", "log on", "logon", "login", "password", "credential")
#: How servers word a refusal of the data itself, whichever way the fault comes back.
VALIDATION_WORDS = ("validate ", "is not valid", "not a valid", "invalid", "is required", "longer than")


@dataclass(frozen=True)
class NotOffered:
    """An optional operation or code list a server does not offer, and the words it answered with."""

    name: str
    reason: str


def post(client: httpx.Client, url: str, body: bytes, *, timeout: float, system: str, key: str,
         headers: dict[str, str] | None = None,
         max_bytes: int = DEFAULT_MAX_RESPONSE_BYTES) -> tuple[httpx.Response, etree._Element]:
    """POST one SOAP request; return the response (its headers; the body is already read) and its parsed document.

    ``system`` names the server in messages (``Confirm``); ``key`` prefixes machine-readable reasons
    (``confirm_authentication``). Raises SoapFault for a SOAP fault, DeliveryErrors for everything else.
    """
    try:
        with client.stream("POST", url, content=body, timeout=timeout,
                           headers={"Accept-Encoding": ACCEPT_ENCODING, **(headers or {})}) as response:
            content = read_capped(response, max_bytes, system=system)
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        # Nothing was sent: the server cannot have acted on this call.
        raise TransientDeliveryError("connection", f"{type(exc).__name__}: {exc}", may_have_landed=False) from exc
    except httpx.TimeoutException as exc:
        raise TransientDeliveryError("timeout", f"{system} did not answer within {timeout:.0f}s") from exc
    except httpx.TransportError as exc:
        raise TransientDeliveryError("connection", f"{type(exc).__name__}: {exc}") from exc
    text = content[:EXCERPT].decode("utf-8", errors="replace")
    status = response.status_code
    has_fault = b"Fault" in content
    if status in (429, 503) and b"Envelope" not in content:
        # Turned away before any work was done: trying again cannot make a second record.
        raise TransientDeliveryError(f"http_{status}", f"HTTP {status} from {system}", response_excerpt=text,
                                     retry_after=_retry_after(response), may_have_landed=False)
    if status >= 500 and not has_fault:
        raise TransientDeliveryError(f"http_{status}", f"HTTP {status} from {system}", response_excerpt=text)
    if status in (401, 403) and not has_fault:
        raise PermanentDeliveryError(f"{key}_authentication", f"{system} refused the credentials (HTTP {status})")
    if status == 415:
        raise PermanentDeliveryError("http_415", f"{system} refused the content type (SOAP 1.1 expected)")
    try:
        root = parse_xml(content)
    except UnsafeXml as exc:
        raise PermanentDeliveryError("unsafe_xml", f"{system}'s answer was refused unread: {exc}") from exc
    except MalformedXml as exc:
        raise TransientDeliveryError("malformed_answer", str(exc), response_excerpt=text) from exc
    raise_for_fault(root)
    return response, root


def read_capped(response: httpx.Response, limit: int, *, system: str) -> bytes:
    """The body of a streamed response with its content coding undone, refusing it as soon as it is over ``limit``
    bytes on the wire or decompressed; a declared length over the cap is refused before anything is read."""
    declared = (response.headers.get("content-length") or "").strip()
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(system, limit, f"it declares {int(declared):,} bytes")
    inflater = _Inflater.for_codings(response.headers.get("content-encoding") or "")
    body = bytearray()
    received = 0
    for chunk in response.iter_raw(_CHUNK):
        received += len(chunk)
        if received > limit:
            raise _too_large(system, limit, f"more than {limit:,} bytes arrived")
        if inflater is None:
            body += chunk
        else:
            inflater.feed(chunk, body, limit, system)
    if inflater is not None:
        inflater.finish(body, limit, system)
    return bytes(body)


class _Inflater:
    """Undoes gzip or deflate a chunk at a time, never producing more than the cap allows."""

    def __init__(self, coding: str) -> None:
        self.coding = coding
        self._decompressor: zlib._Decompress | None = None
        self._head = b""  # deflate: the first bytes, to tell a zlib stream from raw deflate

    @classmethod
    def for_codings(cls, header: str) -> _Inflater | None:
        codings = [token.strip().lower() for token in header.split(",")]
        codings = [coding for coding in codings if coding and coding != "identity"]
        if not codings:
            return None
        if len(codings) > 1 or codings[0] not in ("gzip", "x-gzip", "deflate"):
            raise TransientDeliveryError("malformed_answer", f"unsupported content coding: {', '.join(codings)}")
        return cls(codings[0])

    def feed(self, data: bytes, body: bytearray, limit: int, system: str) -> None:
        if self._decompressor is None:
            self._head += data
            if self.coding == "deflate" and len(self._head) < 2:
                return  # not yet enough to tell a zlib stream from raw deflate
            data, self._head = self._head, b""
            self._decompressor = zlib.decompressobj(self._wbits(data))
        self._inflate(self._decompressor, data, body, limit, system)

    def finish(self, body: bytearray, limit: int, system: str) -> None:
        if self._decompressor is None:
            if not self._head:
                return
            self._decompressor = zlib.decompressobj(self._wbits(self._head))
            self._inflate(self._decompressor, self._head, body, limit, system)
        try:
            body += self._decompressor.flush()
        except zlib.error as exc:
            raise TransientDeliveryError("malformed_answer", f"the body is not valid {self.coding}: {exc}") from exc
        if len(body) > limit:
            raise _too_large(system, limit, f"it inflates to more than {limit:,} bytes")

    def _inflate(self, decompressor: zlib._Decompress, data: bytes, body: bytearray, limit: int,
                 system: str) -> None:
        try:
            while data:
                body += decompressor.decompress(data, limit + 1 - len(body))
                if len(body) > limit:
                    raise _too_large(system, limit, f"it inflates to more than {limit:,} bytes")
                data = decompressor.unconsumed_tail
        except zlib.error as exc:
            raise TransientDeliveryError("malformed_answer", f"the body is not valid {self.coding}: {exc}") from exc

    def _wbits(self, start: bytes) -> int:
        if self.coding != "deflate":
            return 16 + zlib.MAX_WBITS
        # RFC 9110 deflate is a zlib stream; some servers send raw deflate instead (no zlib header).
        zlib_header = len(start) >= 2 and start[0] & 0x0F == 8 and (start[0] << 8 | start[1]) % 31 == 0
        return zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS


def _too_large(system: str, limit: int, why: str) -> TransientDeliveryError:
    return TransientDeliveryError(
        "response_too_large",
        f"{system}'s answer was refused unread: {why}, over this target's max_response_bytes ({limit:,}); "
        "the call itself may have taken effect",
    )


def _retry_after(response: httpx.Response) -> float | None:
    value = (response.headers.get("retry-after") or "").strip()
    return float(value) if value.isdigit() else None


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


__all__ = ["DEFAULT_MAX_RESPONSE_BYTES", "NotOffered", "SoapFault", "classify_fault", "post", "read_capped"]
