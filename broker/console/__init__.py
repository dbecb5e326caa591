"""The support console: web pages at ``/console`` and the same operations as JSON under ``/v1/console``.

For council support officers: find failed messages, understand them, fix and replay them, and answer
"what happened to case X?" — every action recorded in the audit trail with the officer's name.
"""
