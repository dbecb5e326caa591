"""A logged-on session with Uniform's connector: one per adapter instance, renewed when Uniform drops it.

``LogonToConnector`` answers with a session cookie that every later call must carry. Sessions expire on the
server; a call refused for want of a session logs on again and is sent once more. ``LogoffFromConnector``
ends the session when the adapter is closed. The password is read from the environment at logon, never kept
in settings or mapping files.
"""

from __future__ import annotations

import os
import threading

import structlog
from lxml import etree

from adapters.common import soap_client
from adapters.common.soap import CONTENT_TYPE, MalformedXml, SoapFault
from adapters.uniform import soap
from adapters.uniform.config import UniformConfig
from broker.sdk import DeliveryError, HttpResponse, PermanentDeliveryError, TransientDeliveryError

log = structlog.get_logger("casebridge.uniform")

#: How Uniform says that a call came without a live session.
_NO_SESSION = ("not logged on", "not logged in", "session has expired", "session expired", "no session",
               "session is not valid")


def is_session_fault(reason: str) -> bool:
    lowered = reason.lower()
    return any(phrase in lowered for phrase in _NO_SESSION)


class UniformSession:
    def __init__(self, target: str, config: UniformConfig) -> None:
        self.target = target
        self.config = config
        # The session cookie is managed here, explicitly: the client keeps no cookies of its own.
        self._client = soap_client.soap_http_client(config.max_response_bytes, {"Content-Type": CONTENT_TYPE},
                                                    timeout=config.timeout_seconds)
        self._cookie: str | None = None
        self._lock = threading.RLock()
        self.logons = 0

    @property
    def logged_on(self) -> bool:
        return self._cookie is not None

    def call(self, operation: str, *parts: etree._Element, timeout: float) -> etree._Element:
        """One operation in the session (logging on first if needed); its ``Result`` element, without namespaces.
        Raises DeliveryError subclasses; a SOAP fault other than a lost session is classified."""
        with self._lock:
            if self._cookie is None:
                self.logon()
            try:
                return self._send(operation, parts, timeout)
            except SoapFault as fault:
                if not is_session_fault(fault.reason):
                    raise self.refusal(fault.reason, soap=True) from fault
                log.info("uniform.session_lost", target=self.target, operation=operation)
            self._cookie = None
            self.logon()
            try:
                return self._send(operation, parts, timeout)
            except SoapFault as fault:
                if is_session_fault(fault.reason):
                    raise TransientDeliveryError(
                        "uniform_session", f"Uniform refused a fresh session for {operation}: {fault.reason}",
                    ) from fault
                raise self.refusal(fault.reason, soap=True) from fault

    def logon(self) -> None:
        password = os.environ.get(self.config.password_env)
        if password is None:
            raise PermanentDeliveryError("uniform_password_missing",
                                         f"environment variable {self.config.password_env} is not set")
        credentials = etree.Element("UniformLoginCredentials")
        for name, value in (("DatabaseID", self.config.database_id), ("UniformUserName", self.config.username),
                            ("UniformPassword", password)):
            soap.sub(credentials, name, value)
        try:
            response, root = self._post("LogonToConnector", soap.request("LogonToConnector", credentials),
                                        self.config.timeout_seconds)
        except SoapFault as fault:
            raise self.refusal(fault.reason, soap=True) from fault
        answer = self._result(root, "LogonToConnector")
        if (answer.findtext("LogonSuccessful") or "").strip().lower() != "true":
            message = (answer.findtext("Message") or "").strip() or "LogonSuccessful is not true"
            raise PermanentDeliveryError("uniform_authentication", f"Uniform refused the credentials: {message}")
        cookies = [header.split(";", 1)[0].strip() for header in response.header_list("set-cookie")]
        if not cookies:
            raise TransientDeliveryError("uniform_session", "LogonToConnector answered without a session cookie")
        self._cookie = "; ".join(cookies)
        self.logons += 1
        log.info("uniform.logged_on", target=self.target)

    def logoff(self) -> None:
        """End the session, if there is one; a failure here only means the server will expire it itself."""
        with self._lock:
            if self._cookie is None:
                return
            try:
                self._send("LogoffFromConnector", (), 5.0)
            except (DeliveryError, SoapFault) as exc:
                log.info("uniform.logoff_failed", target=self.target, error=type(exc).__name__)
            self._cookie = None

    def close(self) -> None:
        self.logoff()
        self._client.close()

    def _send(self, operation: str, parts: tuple[etree._Element, ...], timeout: float) -> etree._Element:
        headers = {"Cookie": self._cookie} if self._cookie else {}
        _response, root = self._post(operation, soap.request(operation, *parts), timeout, headers)
        return self._result(root, operation)

    def _post(self, operation: str, body: bytes, timeout: float,
              headers: dict[str, str] | None = None) -> tuple[HttpResponse, etree._Element]:
        return soap_client.post(self._client, str(self.config.url), body, timeout=timeout, system="Uniform",
                                key="uniform", headers={"SOAPAction": soap.soap_action(operation), **(headers or {})})

    @staticmethod
    def _result(root: etree._Element, operation: str) -> etree._Element:
        try:
            return soap.result(root, operation)
        except MalformedXml as exc:
            raise TransientDeliveryError("malformed_answer", str(exc)) from exc

    @staticmethod
    def refusal(reason: str, *, soap: bool = False) -> PermanentDeliveryError | TransientDeliveryError:
        return soap_client.classify_fault(reason, system="Uniform", key="uniform", refused="the service request",
                                          soap=soap)
