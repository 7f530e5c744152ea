"""netwatchctl: the command-line client. Talks to the daemon over D-Bus only; imports nothing
of the daemon side but the bus names (netwatchd.bus_names) and netwatchd.text, except `netwatchctl
replay` (netwatchd.ctl.replay), which runs the alerting core offline over the recorded history
and so imports the config, the alerting engine and the history file's reader (store/)."""
