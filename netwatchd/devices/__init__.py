"""The device engine (pure): the TC classifier's counters and events in, the device inventory
out; DNS/DHCP/HTTP/TLS metadata parsers and MAC vendors. Imports no edge; reads the kernel only
through the probe it is given, and the system only through DeviceMonitor's defaults (the clock,
the interface lister: /sys/class/net, the interface namer: if_indextoname) and VendorDb.load
(ieee-data, once at start), which unit tests replace (DEVELOPERS.md, "Layout")."""
