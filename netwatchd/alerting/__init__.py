"""Baselines and alerts (pure, numpy): a tick's observation in, alerts out (core.py, the one
composition the daemon's pipeline and replay of recorded history both run). File I/O of what it
learnt lives in netwatchd.store."""
