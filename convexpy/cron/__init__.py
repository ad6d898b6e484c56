"""Cron jobs: the pure schedule compiler and the ``crons.py`` registration API."""

from convexpy.cron.compile import (
    DAYS_OF_WEEK,
    ClockSchedule,
    IntervalSchedule,
    Schedule,
    compile_schedule,
)
from convexpy.cron.jobs import CronJob, CronJobs, cron_jobs

__all__ = [
    "DAYS_OF_WEEK",
    "ClockSchedule",
    "CronJob",
    "CronJobs",
    "IntervalSchedule",
    "Schedule",
    "compile_schedule",
    "cron_jobs",
]
