from convexpy import cron_jobs

crons = cron_jobs()
crons.interval("static tick", {"hours": 1}, "work:span", {"key": "static", "began": 0, "ended": 0})
