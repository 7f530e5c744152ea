"""Traffic the alert suites generate, as scripts run by the interpreter (in a device's namespace,
or as a local command under a name of the test's own): background devices and commands, steady,
jittered or ramping, storms on request, a SYN flood, a periodic caller. Each is the counterpart
of what a test expects netwatchd to see; the tests that run them say what they expect.
"""

# A background command: refused connects to 127.0.0.1 at `rate` per second, paced in small
# steps; "rate N" on stdin changes it (answered "rate N" once applied); ends when stdin closes.
RATE_COMMAND = r"""
import socket, sys, threading, time
rate = float(sys.argv[1])
closed = socket.socket()
closed.bind(("127.0.0.1", 0))  # bound, never listening: each connect is refused at once
target = closed.getsockname()
eof = threading.Event()
def read():
    global rate
    for line in sys.stdin:
        rate = float(line.split()[1])
        print("rate", line.split()[1], flush=True)
    eof.set()
threading.Thread(target=read, daemon=True).start()
print("ready", flush=True)
budget, last = 0.0, time.monotonic()
while not eof.is_set():
    now = time.monotonic()
    budget = min(budget + rate * (now - last), max(rate * 0.05, 1.0))
    last = now
    for _ in range(int(budget)):
        s = socket.socket()
        s.connect_ex(target)
        s.close()
    budget -= int(budget)
    time.sleep(0.005)
"""

# A device's background traffic: a datagram to srv's echo every 0.2 s (the echo comes back) and,
# with a TCP port, a connection to srv's sink every other round.
QUIET_DEVICE = r"""
import socket, sys, time
srv, udp_port, tcp_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.setblocking(False)
n = 0
while True:
    try:
        u.sendto(b"background", (srv, udp_port))
        while u.recv(2048):
            pass
    except OSError:
        pass
    if tcp_port and n % 2 == 0:
        t = socket.socket()
        t.settimeout(0.3)
        try:
            t.connect((srv, tcp_port))
        except OSError:
            pass
        t.close()
    n += 1
    time.sleep(0.2)
"""


# A device's background: datagrams to srv's echo (IPv4, IPv6 with --v6) every 0.2 s, and TCP
# connects to srv's sink, `shape` deciding how many per 0.1 s step; a datagram to each of a
# range of ports every second with --sweep. Pauses while <dir>/pause exists.
SHAPED_DEVICE = r"""
import os, random, socket, sys, time
srv4, srv6, echo, sink, shape, rate, pause = sys.argv[1:8]
echo, sink, rate = int(echo), int(sink), float(rate)
v6 = "--v6" in sys.argv
sweep = [int(p) for p in sys.argv[sys.argv.index("--sweep") + 1].split("-")] if "--sweep" in sys.argv else None
u4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u4.setblocking(False)
u6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); u6.setblocking(False)
start = time.monotonic()
step, budget, last_sweep = 0, 0.0, 0.0
while True:
    now = time.monotonic()
    if os.path.exists(pause):
        time.sleep(0.05)
        continue
    if step % 2 == 0:
        for s, dst in ((u4, srv4),) + (((u6, srv6),) if v6 else ()):
            try:
                s.sendto(b"background", (dst, echo))
                while s.recv(2048):
                    pass
            except OSError:
                pass
    if sweep and now - last_sweep >= 1.0:
        last_sweep = now
        for port in range(sweep[0], sweep[1]):
            try:
                u4.sendto(b"poll", (srv4, port))
            except OSError:
                pass
    if shape == "steady":
        level = rate
    elif shape == "jitter":
        level = random.uniform(0, 2 * rate)
    elif shape == "ramp":
        level = rate * (1 + 7 * min(1.0, (now - start) / float(sys.argv[8])))
    else:  # light: one connect every 0.4 s
        level = 2.5 if step % 4 == 0 else 0
        budget = 0.0
    budget += level * 0.1
    for _ in range(int(budget)):
        t = socket.socket()
        t.settimeout(0.3)
        try:
            t.connect((srv4, sink))
        except OSError:
            pass
        t.close()
    budget -= int(budget)
    step += 1
    time.sleep(max(0.0, start + step * 0.1 - time.monotonic()))
"""

# A local command: refused connects to 127.0.0.1; shape as for devices; "burst N" on stdin makes N
# at once (answered "burst N <seconds>"); ends when stdin closes.
SHAPED_COMMAND = r"""
import random, socket, sys, threading, time
shape, rate, ramp_sec = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
closed = socket.socket()
closed.bind(("127.0.0.1", 0))
target = closed.getsockname()
bursts, eof = [], threading.Event()
def read():
    for line in sys.stdin:
        bursts.append(int(line.split()[1]))
    eof.set()
threading.Thread(target=read, daemon=True).start()
def connect():
    s = socket.socket()
    s.connect_ex(target)
    s.close()
print("ready", flush=True)
start = time.monotonic()
step, budget = 0, 0.0
while not eof.is_set():
    while bursts:
        n = bursts.pop(0)
        t0 = time.monotonic()
        for _ in range(n):
            connect()
        print("burst", n, round(time.monotonic() - t0, 3), flush=True)
    now = time.monotonic()
    if shape == "steady":
        level = rate
    elif shape == "jitter":
        level = random.uniform(0, 3 * rate)
    else:
        level = rate * (1 + 15 * min(1.0, (now - start) / ramp_sec))
    budget += level * 0.1
    for _ in range(int(budget)):
        connect()
    budget -= int(budget)
    step += 1
    time.sleep(max(0.0, start + step * 0.1 - time.monotonic()))
"""

# In a namespace: `count` TCP SYNs from this device to (dst_ip, port), as raw frames with right
# checksums, as fast as the socket takes them (a SYN flood tool would do the same); prints the
# seconds it took.
SYN_FLOOD = r"""
import random, socket, struct, sys, time
src_mac, dst_mac, src_ip, dst_ip, port, count = sys.argv[1:7]
port, count = int(port), int(count)
def csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF
mac = lambda m: bytes.fromhex(m.replace(":", ""))
src, dst = socket.inet_aton(src_ip), socket.inet_aton(dst_ip)
frames = []
for n in range(count):
    sport = 20000 + n
    tcp = struct.pack("!HHIIBBHHH", sport, port, random.getrandbits(32), 0, 5 << 4, 0x02, 64240, 0, 0)
    tcp = tcp[:16] + struct.pack("!H", csum(src + dst + struct.pack("!BBH", 0, 6, len(tcp)) + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), n & 0xFFFF, 0x4000, 64, 6, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    frames.append(mac(dst_mac) + mac(src_mac) + b"\x08\x00" + ip + tcp)
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
t0 = time.monotonic()
for f in frames:
    s.send(f)
print(round(time.monotonic() - t0, 4))
"""



# A caller: `count` TCP connections to host:port, periodic (PERIOD +- JITTER, uniform) or at
# random (exponential intervals, mean PERIOD); logs "<n> <time>" per connection to a file.
CALLER = r"""
import random, socket, sys, time
host, port, mode, count, seed, log = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
period, jitter = float(sys.argv[7]), float(sys.argv[8])
rng = random.Random(seed)
if len(sys.argv) > 9:  # look the destination's name up first, as a real caller would
    import struct
    name, server = sys.argv[9], sys.argv[10]
    query = struct.pack("!HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0)
    query += b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0" + struct.pack("!HH", 1, 1)
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.settimeout(2)
    u.sendto(query, (server, 53))
    u.recv(512)
with open(log, "a") as out:
    for n in range(1, count + 1):
        s = socket.socket()
        s.settimeout(1)
        try:
            s.connect((host, port))
        except OSError:
            pass
        s.close()
        out.write(f"{n} {time.time()}\n")
        out.flush()
        if n < count:
            time.sleep(period * (1 + jitter * rng.uniform(-1, 1)) if mode == "periodic" else rng.expovariate(1 / period))
"""
