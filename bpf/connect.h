/* Structures shared by the BPF programs and netwatchd/connects/records.py (which mirrors them
 * with ctypes). Change both together; tests/unit/test_connect_record.py checks the sizes. */
#ifndef NW_CONNECT_H
#define NW_CONNECT_H

#define NW_COMM_LEN 16
#define NW_PATH_LEN 108 /* sizeof(sun_path) */

/* What a per-connect record describes. */
#define NW_KIND_CONNECT 1
#define NW_KIND_UDP_SEND 2 /* sendto/sendmsg with an address on an unconnected UDP socket */
#define NW_KIND_HANDSHAKE_END 3 /* how a handshake still pending when connect() returned ended */

/* The outcome of a connect(), final unless NW_OUT_IN_PROGRESS (a record only: the handshake
 * was still going when connect() returned; a NW_KIND_HANDSHAKE_END record follows). */
#define NW_OUT_SUCCEEDED 1    /* returned 0, or the TCP handshake reached ESTABLISHED */
#define NW_OUT_REFUSED 2      /* ECONNREFUSED: an RST answered the SYN */
#define NW_OUT_TIMED_OUT 3    /* ETIMEDOUT: no answer to the SYN and its retries */
#define NW_OUT_OTHER_FAILED 4 /* any other error, or the socket closed before the handshake ended */
#define NW_OUT_IN_PROGRESS 5
#define NW_OUT_UNKNOWN 6 /* EINPROGRESS with no handshake to follow (not TCP, or the map was full) */
#define NW_OUT_SENT 7    /* an unconnected UDP send */

/* Latency histograms: slot k counts handshakes of [2^(k-1), 2^k) microseconds (slot 0: under
 * 1 us); each cell also sums their microseconds (for Prometheus' _sum). */
#define NW_LATENCY_SLOTS 40

/* Transport read from the socket by the cgroup hook (type + protocol), never from the port. */
#define NW_TRANSPORT_UNKNOWN 0 /* the socket hook did not run: unix socket or early failure */
#define NW_TRANSPORT_TCP 1
#define NW_TRANSPORT_UDP 2
#define NW_TRANSPORT_OTHER 3

/* Each connect() is counted once, under its final outcome, when that outcome is known: at
 * return, or when a handshake pending at return ends. Pending handshakes are the entries of
 * the `handshakes` map (user space counts them as in progress). */
struct nw_counts {
    u64 succeeded;
    u64 refused;
    u64 timed_out;
    u64 other_failed;
    u64 unknown;
    u64 udp_sends; /* unconnected UDP sends with a destination address */
};

/* Live per-process counters, keyed by tgid. The command is read once, when the process first
 * connects (bpf_get_current_comm costs as much as the rest of the hot path). */
struct nw_proc_entry {
    char comm[NW_COMM_LEN];
    u32 gen; /* bumped when the entry is retired (exec, or its pid reused by a new process) */
    u32 pad;
    struct nw_counts counts;
};

/* When a process execs (new command) or its pid is reused, its entry is copied here under
 * (tgid, gen) and restarted from zero with gen + 1. User space identifies counters by
 * (tgid, gen): a read that catches an entry both live and retired sees one value twice (it
 * takes it once), and never a count under the wrong command. */
struct nw_retired_key {
    u32 tgid;
    u32 gen;
};

/* One connect(), unconnected UDP send or handshake end, as it travels through the ring buffer. */
struct nw_conn_event {
    u64 boot_ns; /* bpf_ktime_get_boot_ns() at the end of the call (of the handshake for an end) */
    u32 tgid;
    u32 tid;
    u32 uid;
    s32 ret; /* connect() return value (-errno); 0 for UDP sends (not observed) */
    u16 family;
    u16 port; /* host byte order */
    u8 kind;
    u8 transport;
    u8 path_len; /* unix: bytes of path used; first byte 0 = abstract */
    u8 outcome;  /* NW_OUT_* */
    char comm[NW_COMM_LEN];
    u8 addr[16]; /* IPv4 in the first 4 bytes */
    u64 syn_ns;  /* when the SYN was sent (0: no TCP handshake); with tgid, names the handshake */
    u32 latency_usec; /* SYN sent -> ESTABLISHED, or -> failure; 0 while in progress */
    s32 end_err;      /* errno the handshake ended with (ECONNREFUSED, ...); 0 when it succeeded */
};

/* The rare record whose destination the cgroup hook did not see (unix sockets, early failures):
 * the common record plus room for a unix path, so inet records stay small. */
struct nw_conn_event_long {
    struct nw_conn_event ev;
    char path[NW_PATH_LEN];
};

/* One connect() in flight in a thread: the destination, transport and (TCP) socket noted by the
 * cgroup connect hook. Consumed by sys_exit_connect. Slots are indexed by thread id; the tid check makes a
 * collision lose detail, never a count. */
struct nw_pending {
    u32 tid;
    u16 family;
    u16 port;
    u8 transport;
    u8 end_outcome; /* NW_OUT_*: the handshake ended while connect() was still running here */
    u8 exiting;     /* sys_exit_connect has begun: an end from now on goes to `ended` */
    u8 pad;
    s32 end_err;
    u8 addr[16];
    u64 sk;     /* a TCP connect's socket, 0 for any other */
    u64 syn_ns; /* when its handshake started (the connect hook) */
    u64 end_ns; /* when it ended, with end_outcome */
};

/* A flow, as the ring's overflow rule tells a new one from a repeat (see send_record). */
struct nw_flow_key {
    u32 tgid;
    u16 family;
    u16 port;
    u8 addr[16];
};

/* A handshake still pending when connect() returned, keyed by its socket's address: what the
 * record of its end needs, and whose counters it ends in (tgid, gen). */
struct nw_handshake {
    u64 syn_ns;
    u32 tgid;
    u32 tid;
    u32 uid;
    u32 gen;
    u16 family;
    u16 port;
    u32 pad;
    char comm[NW_COMM_LEN];
    u8 addr[16];
};

/* Per (command, destination) latency histogram bucket, tcpconnlat's shape. */
struct nw_latency_key {
    char comm[NW_COMM_LEN];
    u8 addr[16];
    u16 family;
    u16 port;
    u32 slot;
};

struct nw_latency_cell {
    u64 count;
    u64 sum_usec;
};

#endif
