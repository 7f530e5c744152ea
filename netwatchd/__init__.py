"""netwatchd: watches a Linux host's network with eBPF and reports what is new or unusual."""

__version__ = "0.1.0"
