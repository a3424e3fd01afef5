"""Shared instrumentation state (kept tiny: listeners read it on every event)."""

recomputing = 0  # > 0 while bl.checkpoint re-runs a segment inside backward
