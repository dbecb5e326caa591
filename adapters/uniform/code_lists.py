"""The Uniform code lists (``GetCnCodeList``) a mapping uses, which ``broker check`` compares it with."""

from __future__ import annotations

CHECKED_LISTS = ("SRRECTYPE", "SRRECHOW", "SRCUSTTYPE", "SRCLOSEACT")
