"""Confirm (Brightly): highways enquiries over its SOAP connector web service."""

from adapters.confirm.adapter import ConfirmAdapter

__all__ = ["ConfirmAdapter"]
