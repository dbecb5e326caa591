"""Yotta Alloy adapter: canonical cases to Alloy items over its REST API, and their status changes back
(:mod:`.adapter`); a simulator of the API as its sandbox (:mod:`.simulator`, :mod:`.sandbox`). Written with the
adapter SDK (:mod:`broker.sdk`) alone."""
