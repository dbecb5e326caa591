"""The console's roles, each able to do everything the one before it can."""

from __future__ import annotations

ROLES = ("viewer", "operator", "admin")
