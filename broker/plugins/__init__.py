"""Adapter plugins: the contract between the core and an adapter, and finding adapters by entry point.

:mod:`broker.plugins.contract` is what an adapter implements (``Adapter``, ``Capability``, ``DeliveryRequest``,
``DeliveryOutcome``, ``LobStatusChange``); :mod:`broker.plugins.registry` finds adapters in the
``casebridge.adapters`` entry point group and builds them from a target's settings and mapping, and finds the
sandboxes (simulators) that adapters offer for the demo in ``casebridge.sandboxes``.
"""
