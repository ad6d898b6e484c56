from convexpy import cron_jobs, internal

crons = cron_jobs()
crons.hourly("hourly", {"minuteUTC": 15}, internal.runs.record, {"name": "hourly"})
crons.daily("daily", {"hourUTC": 8, "minuteUTC": 30}, internal.runs.record, {"name": "daily"})
crons.weekly(
    "weekly",
    {"dayOfWeek": "sunday", "hourUTC": 2, "minuteUTC": 0},
    internal.runs.record,
    {"name": "weekly"},
)
crons.monthly(
    "monthly 31st",
    {"day": 31, "hourUTC": 0, "minuteUTC": 0},
    internal.runs.record,
    {"name": "monthly 31st"},
)
crons.cron("leap day", "0 12 29 2 *", internal.runs.record, {"name": "leap day"})
crons.cron("weekdays 17h", "0 17 * * 1-5", "runs:record", {"name": "weekdays 17h"})
