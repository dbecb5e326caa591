"""The declarative configuration: ``mappings/`` (services, targets, routes, adapter mappings) and settings.

In: the YAML files and ``CASEBRIDGE_*`` settings. Out: a validated :class:`~broker.config.loader.Configuration`,
or every problem with its file and line (:mod:`broker.config.check`, behind ``broker check``). Secrets come from
the environment, never from these files.
"""
