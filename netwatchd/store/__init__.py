"""Persistence in the state directory: SQLite (inventory, tick history) and the alert state
files, each written so that a SIGKILL leaves the old or the new version."""
