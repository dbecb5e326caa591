"""Errors of the batch machinery, in the broker's one hierarchy."""

from __future__ import annotations

from broker.errors import CasebridgeError


class BatchError(CasebridgeError):
    """A batch run cannot go on (bad configuration, a server that cannot be reached or trusted)."""


class FileRefused(BatchError):
    """A file that cannot be read safely as it stands: its header row is not text in its encoding, or a byte its
    encoding cannot decode may have swallowed a row boundary. Nothing of it is taken in; it is left where it is,
    not recorded as processed, and the run fails, so it is read again once mended (or its encoding configured)."""


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
