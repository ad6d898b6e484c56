from convexpy import cron_jobs, internal

crons = cron_jobs()
crons.interval("clean up rate limit counters", {"hours": 1}, internal.limits.cleanup)
