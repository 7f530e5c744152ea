"""Baselines and alerts (pure, numpy): a tick's observation in, alerts out; replay of recorded
history. File I/O of what it learnt lives in netwatchd.store."""
