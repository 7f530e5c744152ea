/* Structures shared by the BPF programs and netwatchd/connects/records.py (which mirrors them
 * with ctypes). Change both together; tests/unit/test_connect_record.py checks the sizes. */
#ifndef NW_CONNECT_H
#define NW_CONNECT_H

#define NW_COMM_LEN 16
#define NW_PATH_LEN 108 /* sizeof(sun_path) */

/* What a per-connect record describes. */
#define NW_KIND_CONNECT 1
#define NW_KIND_UDP_SEND 2 /* sendto/sendmsg with an address on an unconnected UDP socket */

/* Transport read from the socket by the cgroup hook (type + protocol), never from the port. */
#define NW_TRANSPORT_UNKNOWN 0 /* the socket hook did not run: unix socket or early failure */
#define NW_TRANSPORT_TCP 1
#define NW_TRANSPORT_UDP 2
#define NW_TRANSPORT_OTHER 3

struct nw_counts {
    u64 succeeded;   /* connect() returned 0 */
    u64 failed;      /* connect() returned an error other than EINPROGRESS */
    u64 in_progress; /* non-blocking connect() returned EINPROGRESS */
    u64 udp_sends;   /* unconnected UDP sends with a destination address */
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

/* One connect() or unconnected UDP send, as it travels through the ring buffer. */
struct nw_conn_event {
    u64 boot_ns; /* bpf_ktime_get_boot_ns() at the end of the call */
    u32 tgid;
    u32 tid;
    u32 uid;
    s32 ret; /* connect() return value (-errno); 0 for UDP sends (not observed) */
    u16 family;
    u16 port; /* host byte order */
    u8 kind;
    u8 transport;
    u8 path_len; /* unix: bytes of path used; first byte 0 = abstract */
    u8 pad;
    char comm[NW_COMM_LEN];
    u8 addr[16]; /* IPv4 in the first 4 bytes */
};

/* The rare record whose destination the cgroup hook did not see (unix sockets, early failures):
 * the common record plus room for a unix path, so inet records stay small. */
struct nw_conn_event_long {
    struct nw_conn_event ev;
    char path[NW_PATH_LEN];
};

/* What sys_enter_connect saw, completed by the cgroup hook, consumed by sys_exit_connect.
 * Slots are indexed by thread id; the tid check makes a collision lose detail, never a count. */
struct nw_pending {
    u32 tid;
    u16 family;
    u16 port;
    u8 transport;
    u8 pad[3];
    u8 addr[16];
};

#endif
