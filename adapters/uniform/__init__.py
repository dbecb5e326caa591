"""Uniform (Idox): environmental health, licensing and planning cases over its SOAP connector
(:mod:`.adapter`)."""
