"""Uniform (Idox): environmental health, licensing and planning cases over its SOAP connector."""

from adapters.uniform.adapter import UniformAdapter

__all__ = ["UniformAdapter"]
