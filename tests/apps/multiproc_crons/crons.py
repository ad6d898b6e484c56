from convexpy import cron_jobs, internal

crons = cron_jobs()
crons.interval("tick", {"seconds": 1}, internal.tick.tick, {})
