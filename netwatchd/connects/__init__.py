"""The connect engine (pure): per-process kernel counters and connect records in, Summary and
ListConnections answers out. Imports no edge (bcc, D-Bus, journald, SQLite)."""
