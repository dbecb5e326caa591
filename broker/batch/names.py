"""Remote file names we are willing to touch: a plain name inside the configured directory, nothing else."""

from __future__ import annotations

import posixpath

from broker.batch.errors import UnsafeRemoteName

_MAX_NAME = 255


def check_name(name: str) -> str:
    """``name`` if it is a plain file name; otherwise UnsafeRemoteName saying why.

    Refused: empty names, ``.`` and ``..``, any ``/`` or ``\\`` (a path, not a name: ``../x``, ``/etc/x``,
    ``..\\x``), control characters, names that start with a dot (our own temporary uploads) and over-long names.
    """
    if not name or name in (".", ".."):
        raise UnsafeRemoteName(f"remote file name {name!r} is not a file name")
    if "/" in name or "\\" in name:
        raise UnsafeRemoteName(f"remote file name {name!r} contains a path separator (no paths, no '../')")
    if any(ord(char) < 32 or ord(char) == 127 for char in name):
        raise UnsafeRemoteName(f"remote file name {name!r} contains a control character")
    if name.startswith("."):
        raise UnsafeRemoteName(f"remote file name {name!r} starts with a dot (hidden or temporary)")
    if len(name) > _MAX_NAME:
        raise UnsafeRemoteName(f"remote file name is longer than {_MAX_NAME} characters")
    return name


def check_directory(directory: str) -> str:
    """A configured remote directory: absolute or relative to the login directory, but never with ``..``."""
    if not directory or "\\" in directory or any(ord(char) < 32 for char in directory):
        raise UnsafeRemoteName(f"remote directory {directory!r} is not a usable path")
    if ".." in directory.split("/"):
        raise UnsafeRemoteName(f"remote directory {directory!r} contains '..'")
    return directory.rstrip("/") or "/"


def remote_path(directory: str, name: str) -> str:
    return posixpath.join(check_directory(directory), check_name(name))


def temporary_name(name: str) -> str:
    """Where an upload is written before it is renamed into place: hidden, so readers skip it."""
    return f".{check_name(name)}.part"


def temporary_path(directory: str, name: str) -> str:
    return posixpath.join(check_directory(directory), temporary_name(name))
