"""The daemon's outputs: the D-Bus service, alerts into journald, Prometheus metrics and the
JSON HTTP API. Each converts between its transport and the engines, nothing more."""
