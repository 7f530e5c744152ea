"""The device engine (pure): the TC classifier's counters and events in, the device inventory
out; DNS/DHCP/HTTP/TLS metadata parsers and MAC vendors. Imports no edge."""
