"""One cron job of every kind."""

from convexpy import cron_jobs, internal

crons = cron_jobs()

crons.interval("check queue", {"minutes": 10}, internal.tasks.record, {"job": "check queue"})
crons.hourly("metrics", {"minuteUTC": 0}, internal.tasks.record, {"job": "metrics"})
crons.daily("digest", {"hourUTC": 8, "minuteUTC": 0}, internal.tasks.record, {"job": "digest"})
crons.weekly(
    "backup",
    {"dayOfWeek": "sunday", "hourUTC": 2, "minuteUTC": 0},
    internal.tasks.ping,
    {"job": "backup"},
)
crons.monthly(
    "billing", {"day": 1, "hourUTC": 9, "minuteUTC": 0}, internal.tasks.record, {"job": "billing"}
)
crons.cron("weekday reminder", "0 17 * * 1-5", internal.tasks.record, {"job": "weekday reminder"})
crons.cron(
    "paris lunch",
    "0 12 * * *",
    internal.tasks.record,
    {"job": "paris lunch"},
    timezone="Europe/Paris",
)
