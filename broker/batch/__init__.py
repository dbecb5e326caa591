"""Batch targets: deliveries that accumulate and leave as CSV files over SFTP, and LOB files that come back.

One module per job: ``config`` (the shapes of the files), ``names`` (remote names we accept), ``sftp`` (the
connection), ``csv_export`` / ``csv_import`` (the file formats), ``ledger`` (files done, runs, locks),
``export`` / ``importer`` (the two schedule jobs) and ``jobs`` (the entries schedules name).
"""
