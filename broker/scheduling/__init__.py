"""Scheduled jobs: ``schedules/*.yaml`` run at their cron times, in their time zone, and each run recorded.

In: the schedule files and the jobs registry (:mod:`broker.scheduling.jobs`: stale deliveries re-queued,
unconfirmed deliveries reconciled, LOB status changes polled, batch exports and imports). Out: one recorded run
per firing, with its outcome and summary, shown by ``broker batch list`` and the console.
"""
