"""Errors of the batch machinery, in the broker's one hierarchy."""

from __future__ import annotations

from broker.errors import CasebridgeError


class BatchError(CasebridgeError):
    """A batch run cannot go on (bad configuration, a server that cannot be reached or trusted)."""


class UnsafeRemoteName(BatchError):
    """A remote file name that could reach outside its directory (``../``, an absolute path, a separator)."""


class HostKeyRejected(BatchError):
    """The SFTP server's host key is not the one in the configured known_hosts file."""


class RowError(CasebridgeError):
    """One imported row cannot become an event; it fails alone, with this reason."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        self.message = message
        super().__init__(f"{reason}: {message}")
