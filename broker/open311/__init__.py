"""Open311 GeoReport v2, with FixMyStreet's extensions: a second HTTP intake beside :mod:`broker.api`.

In: form-encoded reports (``POST requests``) and residents' updates (``POST servicerequestupdates``) from
FixMyStreet or any Open311 client, with an API key bound to its system; reads of the service catalogue, of that
system's cases (``GET requests``) and of every status change and public note that reached them in a window
(``GET servicerequestupdates``). Out: canonical ``case.created``, ``case.note_added`` and ``case.status_changed``
events taken in by :mod:`broker.intake`; answers in XML (or JSON) as the spec shapes them, errors as
``<errors><error><code/><description/></error></errors>`` naming the parameter at fault.
Promises: a report is answered with its ``service_request_id`` only once its case is recorded, and a report or
update sent again gets the same id and creates nothing; each change has one ``update_id`` however often it is
polled, and is listed in every window that holds the moment it was recorded here, so overlapping polls miss none;
every datetime carries its offset; bad input is a 4xx, never a 500.
"""
