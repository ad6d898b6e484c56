"""Durable scheduling: ``ctx.scheduler``, the dispatcher that starts due jobs,
the runner that runs them, retention, and the timer wheel (see ``host.py``
for what it needs of the runtime)."""
