"""The HTTP API, a thin layer: ``POST /v1/cases`` and the case's events in, receipts and case views out.

In: HTTP requests from CRMs and portals, with an API key bound to their system. Out: a ``202`` receipt once
:mod:`broker.intake` has recorded the case, or a 4xx naming the field at fault (503 with ``Retry-After`` while the
store is unreachable). It parses, authenticates, limits and answers; the decisions are intake's.
"""
