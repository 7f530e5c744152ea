"""netwatchctl: the command-line client. Talks to the daemon over D-Bus only; imports nothing
of the daemon side but the bus names (netwatchd.bus_names)."""
