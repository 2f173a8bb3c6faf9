"""Shared test configuration and session-wide fixtures."""

from __future__ import annotations

from hypothesis import settings

# No example database in the checkout; no per-example deadline (the machine may be loaded).
settings.register_profile("course", database=None, deadline=None)
settings.load_profile("course")
