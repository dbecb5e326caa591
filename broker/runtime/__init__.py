"""A broker process, composed from settings: store, intake, relay, consumers, scheduler and API.

``broker run`` starts all of it in one process (the embedded default); ``broker api``, ``broker worker`` and
``broker scheduler`` start a part each. :mod:`broker.runtime.demo` adds the stand-ins of ``broker run --demo``.
"""
