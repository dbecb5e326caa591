"""Mechanisms more than one adapter needs: SOAP envelopes read safely, SOAP calls with their errors classified,
a SOAP simulator's HTTP harness, and grid references. Adapters import this package, never each other."""
