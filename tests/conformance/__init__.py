"""The storage port's conformance suite: every test runs on every store.

See conftest.py for how a store joins.
"""
