"""Durable scheduling: the timer wheel, the job table and the executor."""
