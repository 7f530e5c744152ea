/* Structures shared by bpf/device.bpf.c and netwatchd/devices/records.py (ctypes mirror).
 * Change both together; tests/unit/test_header_layouts.py checks sizes and offsets against a C compiler. */
#ifndef NETWATCH_DEVICE_H
#define NETWATCH_DEVICE_H

/* Protocol classes, as indexes into the counters (netwatchd/devices/model.py PROTOCOLS). */
#define NW_P_ARP 0
#define NW_P_IPV4 1 /* IPv4 other than TCP/UDP/ICMP, and non-first fragments */
#define NW_P_IPV6 2
#define NW_P_TCP 3
#define NW_P_UDP 4
#define NW_P_ICMP 5
#define NW_P_ICMPV6 6
#define NW_P_OTHER 7
#define NW_NPROTO 8

#define NW_DIR_TX 0 /* sent by the device: seen on ingress, device = source MAC */
#define NW_DIR_RX 1 /* sent to the device: seen on egress, device = destination MAC */

struct nw_mac {
    u8 addr[6];
    u16 pad;
};

/* Per-device counters, in a per-CPU hash keyed by MAC (user space sums the CPUs). */
struct nw_dev_counters {
    u64 packets[2 * NW_NPROTO]; /* [direction * NW_NPROTO + protocol]: flat, as bcc's tables read */
    u64 bytes[2 * NW_NPROTO];
    u64 tcp_syns; /* SYN without ACK sent by the device: a connection attempt */
    u64 created_ns; /* bpf_ktime_get_boot_ns() when first seen (on the CPU that saw it first) */
    u32 ifindex; /* where first seen */
    u16 vlan;
    u16 pad;
    u32 last_pattern; /* hash of the last pattern reported: skips the LRU for repeats */
    u32 snippet_budget; /* snippets this device may still send in the current second (this CPU) */
    u64 budget_ns;      /* when that second began (0: not yet) */
};

/* Ring-buffer event kinds. */
#define NW_EV_NEW_DEVICE 1 /* no longer sent: new devices are found in the counter map */
#define NW_EV_ADDRESS 2 /* an (IP, MAC) binding from ARP, NDP: new, or moved to another MAC */
#define NW_EV_PATTERN 3 /* a first-seen (device, peer, port, transport) */
/* A pattern's transport for the targets of a device's ARP requests (port 0): no IP protocol
 * uses 254 (RFC 3692: for experiments), so it cannot collide with a real one. */
#define NW_T_ARP 254
#define NW_EV_SNIPPET 4 /* the start of an application payload */

/* Snippet kinds. */
#define NW_APP_DNS 1
#define NW_APP_DHCP 2
#define NW_APP_HTTP 3
#define NW_APP_TLS 4

#define NW_SNIP_LEN 1024

struct nw_dev_event {
    u64 boot_ns;
    u32 ifindex;
    u8 kind;
    u8 app;       /* NW_APP_* for snippets */
    u8 direction; /* NW_DIR_* */
    u8 transport; /* IPPROTO_TCP / IPPROTO_UDP / IPPROTO_ICMP... (0 for ARP) */
    u8 mac[6];    /* the device */
    u8 peer_mac[6];
    u16 vlan;
    u16 family; /* 2 inet, 10 inet6 */
    u16 sport;
    u16 dport;
    u16 payload_len; /* whole L4 payload as the packet says */
    u16 snap_len;    /* bytes of it in data[] */
    u8 saddr[16];
    u8 daddr[16];
};

struct nw_dev_snippet {
    struct nw_dev_event ev;
    u8 data[NW_SNIP_LEN];
};

struct nw_ip_key {
    u16 family;
    u16 pad;
    u8 addr[16];
};

/* Key of the LRU that makes patterns first-seen only. */
struct nw_pattern {
    u8 mac[6];
    u8 kind;      /* NW_EV_PATTERN */
    u8 transport;
    u16 port;
    u16 family;
    u8 addr[16];
};

/* The beacon_pairs LRU (bpf/device.bpf.c): per (device, peer, port), the device's last two TCP
 * connection starts (SYNs), read every tick, so user space sees each start of a slow, regular
 * caller without a ring-buffer record per SYN. */
struct nw_beacon_key {
    u8 mac[6];
    u16 port;
    u16 family;
    u16 pad;
    u8 addr[16];
};

struct nw_beacon_starts {
    u64 last_ns;   /* bpf_ktime_get_boot_ns() of the newest start */
    u64 prev_ns;   /* of the one before it (0: none yet) */
    u32 count;     /* starts so far; a retransmitted SYN (same source port) is not one */
    u16 last_sport;
    u16 pad;
};

/* Runtime switches (array map "dev_settings"), written by the daemon; a reload needs no
 * recompile. */
#define NW_SET_DNS 0
#define NW_SET_HTTP 1
#define NW_SET_TLS 2
#define NW_SET_DHCP 3
#define NW_NSETTINGS 4

/* Loss counters (per-CPU array "dev_losses"). */
#define NW_LOSS_RING 0       /* events that found the ring full */
#define NW_LOSS_DEVICES 1    /* packets of devices that found no room in the device LRU (rare) */
#define NW_LOSS_MALFORMED 2  /* frames too short or inconsistent to parse */
#define NW_LOSS_THROTTLED 3  /* snippets of a device beyond its budget (NW_SNIPPET_BUDGET a second) */
#define NW_NLOSSES 4

#endif
