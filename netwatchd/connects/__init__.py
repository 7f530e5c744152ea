"""The connect engine (pure): per-process kernel counters and connect records in, Summary and
ListConnections answers out. Imports no edge (bcc, D-Bus, journald, SQLite); reads the kernel
only through the probe it is given, and the system only through monitor.py's defaults (the
clock, process_gone: /proc), which unit tests replace (DEVELOPERS.md, "Layout")."""
