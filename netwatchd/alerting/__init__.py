"""Baselines and alerts (pure, numpy): a tick's observation in, alerts out (core.py, the one
composition the daemon's pipeline and replay of recorded history both run). File I/O of what it
learnt lives in netwatchd.store; the only read of the system is seasonality.py's default for the
local time zone's UTC offset (and the pipeline's default clock)."""
