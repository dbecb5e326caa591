"""A small SFTP client over paramiko: verified host keys, atomic uploads, checksummed downloads.

The server's host key must already be in the configured known_hosts file: an unknown or changed key is refused
with a clear error, never accepted. Credentials come from environment variables the target's mapping names.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import stat
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

import paramiko

from broker.batch.config import SftpServer
from broker.batch.errors import BatchError, HostKeyRejected
from broker.batch.names import remote_path, temporary_path

#: Told how many bytes have moved so far, and how many there are in all.
ByteProgress = Callable[[int, int], None]
_CHUNK = 256 * 1024


@dataclass(frozen=True)
class RemoteFile:
    name: str
    size: int
    mtime: int


class SftpSession:
    """One logged-in SFTP connection. Use as a context manager."""

    def __init__(self, server: SftpServer, environ: dict[str, str] | None = None) -> None:
        self.server = server
        env = dict(os.environ) if environ is None else environ
        self._ssh = paramiko.SSHClient()
        if not server.known_hosts.is_file():
            raise HostKeyRejected(f"known_hosts file {server.known_hosts} does not exist: add the server's host key "
                                  "to it (after checking its fingerprint with the server's owner)")
        self._ssh.load_host_keys(str(server.known_hosts))
        self._ssh.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            self._ssh.connect(
                server.host, port=server.port, username=server.username, timeout=server.timeout_seconds,
                banner_timeout=server.timeout_seconds, auth_timeout=server.timeout_seconds,
                look_for_keys=False, allow_agent=False, **_credentials(server, env),
            )
        except paramiko.BadHostKeyException as exc:
            self._ssh.close()
            raise HostKeyRejected(f"the host key of {server.host}:{server.port} does not match the one in "
                                  f"{server.known_hosts}: refusing to connect (the server may be an impostor)") from exc
        except paramiko.SSHException as exc:
            self._ssh.close()
            if "not found in known_hosts" in str(exc):
                raise HostKeyRejected(f"the host key of {server.host}:{server.port} is not in {server.known_hosts}: "
                                      "refusing to connect to an unknown server") from exc
            raise BatchError(f"SFTP login to {server.host}:{server.port} failed: {exc}") from exc
        except OSError as exc:
            self._ssh.close()
            raise BatchError(f"cannot reach SFTP server {server.host}:{server.port}: {exc}") from exc
        self.sftp = self._ssh.open_sftp()

    def __enter__(self) -> SftpSession:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        # Closing a connection that has already dropped must not hide the error that dropped it.
        with contextlib.suppress(Exception):
            self.sftp.close()
        with contextlib.suppress(Exception):
            self._ssh.close()

    def list_files(self, directory: str) -> list[RemoteFile]:
        """Regular files in ``directory``, by name."""
        try:
            entries = self.sftp.listdir_attr(directory)
        except FileNotFoundError as exc:
            raise BatchError(f"remote directory {directory!r} does not exist on {self.server.host}") from exc
        return sorted(
            (RemoteFile(entry.filename, entry.st_size or 0, entry.st_mtime or 0) for entry in entries
             if entry.st_mode is not None and stat.S_ISREG(entry.st_mode)),
            key=lambda item: item.name,
        )

    def size_of(self, path: str) -> int | None:
        try:
            size: int | None = self.sftp.stat(path).st_size
        except FileNotFoundError:
            return None
        return size

    def remove_if_present(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.sftp.remove(path)

    def ensure_directory(self, path: str) -> None:
        """Create ``path`` (and its parents) if it is missing."""
        try:
            self.sftp.stat(path)
        except FileNotFoundError:
            parent = posixpath.dirname(path.rstrip("/"))
            if parent and parent not in ("/", "."):
                self.ensure_directory(parent)
            self.sftp.mkdir(path)

    def upload(self, local: IO[bytes], size: int, directory: str, name: str,
               progress: ByteProgress | None = None) -> None:
        """Write ``local`` to ``directory/name`` atomically: under a hidden temporary name, renamed when complete.

        The rename refuses to replace an existing file, so a name collision is an error rather than lost data.
        """
        final, temporary = remote_path(directory, name), temporary_path(directory, name)
        self.remove_if_present(temporary)
        with self.sftp.open(temporary, "wb") as remote:
            remote.set_pipelined(True)
            sent = 0
            while chunk := local.read(_CHUNK):
                remote.write(chunk)
                sent += len(chunk)
                if progress is not None:
                    progress(sent, size)
        written = self.sftp.stat(temporary).st_size
        if written != size:
            raise BatchError(f"upload of {name} is incomplete: {written} of {size} bytes arrived")
        self.sftp.rename(temporary, final)

    def download(self, directory: str, name: str, local: IO[bytes], progress: ByteProgress | None = None) -> str:
        """Copy ``directory/name`` into ``local``; returns its SHA-256 (hex)."""
        digest = hashlib.sha256()
        path = remote_path(directory, name)
        size = self.sftp.stat(path).st_size or 0
        with self.sftp.open(path, "rb") as remote:
            remote.prefetch(size)
            done = 0
            while chunk := remote.read(_CHUNK):
                local.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, size)
        return digest.hexdigest()

    def move(self, source_dir: str, name: str, target_dir: str, target_name: str | None = None) -> str:
        """Move a file to another directory (created if missing); returns the name it got there."""
        self.ensure_directory(target_dir)
        wanted = target_name or name
        if self.size_of(remote_path(target_dir, wanted)) is not None:
            stem, dot, suffix = wanted.rpartition(".")
            stamp = hashlib.sha256(os.urandom(8)).hexdigest()[:8]
            wanted = f"{stem}.{stamp}.{suffix}" if dot else f"{wanted}.{stamp}"
        self.sftp.rename(remote_path(source_dir, name), remote_path(target_dir, wanted))
        return wanted


def _credentials(server: SftpServer, env: dict[str, str]) -> dict[str, Any]:
    if server.key_path_env:
        key_path = env.get(server.key_path_env)
        if not key_path:
            raise BatchError(f"environment variable {server.key_path_env} (the SFTP private key's path) is not set")
        passphrase = env.get(server.key_passphrase_env) if server.key_passphrase_env else None
        return {"key_filename": key_path, "passphrase": passphrase,
                "password": env.get(server.password_env) if server.password_env else None}
    assert server.password_env is not None
    password = env.get(server.password_env)
    if not password:
        raise BatchError(f"environment variable {server.password_env} (the SFTP password) is not set")
    return {"password": password}
