/* netwatchd devices on the wire: a TC classifier on ingress and egress of monitored interfaces.
 *
 * Counts packets and bytes per device (MAC), protocol and direction in a bounded hash, read by
 * user space every tick (new devices are found there). The ring buffer (no wakeups) carries
 * only what user space must see once: a new address binding (ARP/NDP), a new (device, peer,
 * port, transport) pattern -- made first-seen-only by an LRU map -- and the start of DNS, DHCP,
 * HTTP and TLS payloads. Payload is read with bpf_skb_load_bytes, which follows the packet past
 * its linear part: with veth/GRO offloads the HTTP and TLS bytes are often in page fragments.
 *
 * Headers are read with direct packet access; anything that does not fit is counted as
 * malformed and left alone. The classifier never changes a verdict (TC_ACT_UNSPEC).
 *
 * Settings arrive as -D cflags from netwatchd/kernel/device_probe.py:
 *   NW_MAX_DEVICES, NW_MAX_PATTERNS, NW_DEV_RING_PAGES, NW_BEACON_PAIRS (0: no beacon map),
 *   NW_SNIPPET_BUDGET (payload snippets a device may send a second, per CPU).
 * Runtime switches (DNS/HTTP/TLS/DHCP capture) live in the dev_settings array. */
#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>
#include <uapi/linux/pkt_cls.h>
#include "device.h"

#define NW_ETH_P_IP 0x0800
#define NW_ETH_P_ARP 0x0806
#define NW_ETH_P_IPV6 0x86DD
#define NW_ETH_P_8021Q 0x8100
#define NW_ETH_P_8021AD 0x88A8
#define NW_IPPROTO_ICMPV6 58
#define NW_MAX_L4_OFFSET 256 /* deeper headers than this are not parsed */
#define NW_TCP_SYN 0x02
#define NW_TCP_ACK 0x10

/* Per-CPU: two CPUs counting the same device (a busy gateway) never bounce its cache line, and
 * softirq context never runs twice at once on one CPU, so plain adds are exact.
 * An LRU: any device can write any source MAC, and a flood of forged ones (macof) must not fill
 * the map and leave a real new device uncounted. A new MAC takes the place of the one that was
 * least recently seen -- a forged MAC that sent one frame, not a device that keeps talking.
 * User space reads the map every tick, so an entry evicted after that lost at most the frames
 * since; it notices the eviction (the MAC is gone, or comes back with a new created_ns) and
 * counts it (netwatchd/devices/monitor.py). */
BPF_TABLE("lru_percpu_hash", struct nw_mac, struct nw_dev_counters, devices, NW_MAX_DEVICES);
BPF_TABLE("lru_hash", struct nw_pattern, u8, seen_patterns, NW_MAX_PATTERNS);
/* The MAC each IP address was last bound to (ARP/NDP): a binding is reported when it is new or
 * when it moved to another MAC -- including back again, which is how a flip-flop shows. */
BPF_TABLE("lru_hash", struct nw_ip_key, struct nw_mac, ip_owner, NW_MAX_PATTERNS);
BPF_ARRAY(dev_settings, u32, NW_NSETTINGS);
BPF_RINGBUF_OUTPUT(dev_events, NW_DEV_RING_PAGES);
BPF_PERCPU_ARRAY(dev_losses, u64, NW_NLOSSES);
#ifndef NW_BEACON_PAIRS
#define NW_BEACON_PAIRS 0
#endif
#if NW_BEACON_PAIRS > 0
/* Beacons: each device's last two connection starts per (peer, port), read every tick. Shared,
 * not per-CPU: one pair's SYNs come one at a time; a rare race between CPUs costs one start. */
BPF_TABLE("lru_hash", struct nw_beacon_key, struct nw_beacon_starts, beacon_pairs, NW_BEACON_PAIRS);
#endif

struct nw_eth {
    u8 dst[6];
    u8 src[6];
    u16 proto;
};

struct nw_vlan {
    u16 tci;
    u16 proto;
};

struct nw_arp {
    u16 htype;
    u16 ptype;
    u8 hlen;
    u8 plen;
    u16 op;
    u8 sha[6];
    u8 spa[4];
    u8 tha[6];
    u8 tpa[4];
} __attribute__((packed));

struct nw_ip4 {
    u8 ver_ihl;
    u8 tos;
    u16 tot_len;
    u16 id;
    u16 frag_off;
    u8 ttl;
    u8 protocol;
    u16 check;
    u8 saddr[4];
    u8 daddr[4];
};

struct nw_ip6 {
    u32 ver_tc_flow;
    u16 payload_len;
    u8 nexthdr;
    u8 hop_limit;
    u8 saddr[16];
    u8 daddr[16];
};

struct nw_ext6 {
    u8 nexthdr;
    u8 len;
    u16 frag_off; /* fragment header only */
};

struct nw_tcp {
    u16 sport;
    u16 dport;
    u32 seq;
    u32 ack_seq;
    u8 doff_res;
    u8 flags;
    u16 window;
};

struct nw_udp {
    u16 sport;
    u16 dport;
    u16 len;
    u16 check;
};

struct nw_icmp6 {
    u8 type;
    u8 code;
    u16 check;
    u32 reserved;
    u8 target[16]; /* NS / NA */
};

/* What the parser learned about one packet. */
struct nw_pkt {
    u16 family;
    u8 transport;
    u8 pclass;
    u8 tcp_flags;
    u8 icmp_type; /* ICMP/ICMPv6: the message type (8, 128: echo request) */
    u8 pad[2];
    u16 sport;
    u16 dport;
    u32 payload_off;
    u32 payload_len;
    u8 saddr[16];
    u8 daddr[16];
};

static __always_inline void count_loss(int which)
{
    u64 *v = dev_losses.lookup(&which);
    if (v)
        (*v)++;
}

static __always_inline int same_mac(const u8 *a, const u8 *b)
{
    return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3] && a[4] == b[4] && a[5] == b[5];
}

static __always_inline int setting(int which)
{
    u32 *v = dev_settings.lookup(&which);
    return v && *v;
}

static __always_inline void fill_event(struct nw_dev_event *e, struct __sk_buff *skb, u8 kind, int dir,
                                       const u8 *mac, const u8 *peer_mac, u16 vlan, struct nw_pkt *p)
{
    e->boot_ns = bpf_ktime_get_boot_ns();
    e->ifindex = skb->ifindex;
    e->kind = kind;
    e->app = 0;
    e->direction = dir;
    e->transport = p->transport;
    __builtin_memcpy(e->mac, mac, 6);
    __builtin_memcpy(e->peer_mac, peer_mac, 6);
    e->vlan = vlan;
    e->family = p->family;
    e->sport = p->sport;
    e->dport = p->dport;
    e->payload_len = p->payload_len;
    e->snap_len = 0;
    __builtin_memcpy(e->saddr, p->saddr, 16);
    __builtin_memcpy(e->daddr, p->daddr, 16);
}

#ifndef NW_SNIPPET_BUDGET
#define NW_SNIPPET_BUDGET 256
#endif
#define NW_BUDGET_PERIOD_NS 1000000000ULL

/* The ring is shared by every device, and a snippet takes a kilobyte of it: a device flooding
 * DNS questions (or HTTP requests, ClientHellos) would fill the ring within a poll and hide the
 * records of the others (a scan's new ports, a spoof's address move). So each device may send
 * at most NW_SNIPPET_BUDGET snippets a second (per CPU: the counters entry is per-CPU, no
 * atomics needed); beyond, they are counted as throttled. Patterns and address bindings are
 * not budgeted: they are small, and a device sending many is what fan-out and address-move
 * detection are for. Counts are never affected: they are the map's. */
static __always_inline int spend_snippet_budget(struct nw_dev_counters *c)
{
    u64 now = bpf_ktime_get_boot_ns();
    if (now - c->budget_ns >= NW_BUDGET_PERIOD_NS) {
        c->budget_ns = now;
        c->snippet_budget = NW_SNIPPET_BUDGET;
    }
    if (c->snippet_budget == 0) {
        count_loss(NW_LOSS_THROTTLED);
        return 0;
    }
    c->snippet_budget -= 1;
    return 1;
}

static __always_inline void emit(struct __sk_buff *skb, u8 kind, int dir, const u8 *mac, const u8 *peer_mac, u16 vlan,
                                 struct nw_pkt *p)
{
    struct nw_dev_event *e = dev_events.ringbuf_reserve(sizeof(struct nw_dev_event));
    if (!e) {
        count_loss(NW_LOSS_RING);
        return;
    }
    fill_event(e, skb, kind, dir, mac, peer_mac, vlan, p);
    dev_events.ringbuf_submit(e, BPF_RB_NO_WAKEUP);
}

static __always_inline void emit_snippet(struct __sk_buff *skb, struct nw_dev_counters *c, u8 app, int dir,
                                         const u8 *mac, const u8 *peer_mac, u16 vlan, struct nw_pkt *p)
{
    u32 n = p->payload_len;
    if (n > NW_SNIP_LEN)
        n = NW_SNIP_LEN;
    if (n == 0)
        return;
    /* The IP header claims more than the frame holds (cut or forged; the stack drops such a
     * packet): malformed, not a payload to report -- a cut snippet would read as a real one. */
    if (p->payload_off + p->payload_len > skb->len) {
        count_loss(NW_LOSS_MALFORMED);
        return;
    }
    if (!spend_snippet_budget(c))
        return;
    struct nw_dev_snippet *s = dev_events.ringbuf_reserve(sizeof(struct nw_dev_snippet));
    if (!s) {
        count_loss(NW_LOSS_RING);
        return;
    }
    fill_event(&s->ev, skb, NW_EV_SNIPPET, dir, mac, peer_mac, vlan, p);
    s->ev.app = app;
    /* 1..NW_SNIP_LEN in a form the verifier can see (n is already within it when non-zero) */
    u32 len = ((n - 1) & (NW_SNIP_LEN - 1)) + 1;
    if (n == 0 || bpf_skb_load_bytes(skb, p->payload_off, s->data, len) != 0) {
        count_loss(NW_LOSS_MALFORMED);
        dev_events.ringbuf_discard(s, 0);
        return;
    }
    s->ev.snap_len = len;
    dev_events.ringbuf_submit(s, BPF_RB_NO_WAKEUP);
}

/* First-seen only: an LRU remembers (device, peer address, port, transport). */
static __always_inline int first_seen(const u8 *mac, u8 kind, struct nw_pkt *p, const u8 *addr, u16 port)
{
    struct nw_pattern key = {};
    __builtin_memcpy(key.mac, mac, 6);
    key.kind = kind;
    key.transport = p->transport;
    key.port = port;
    key.family = p->family;
    __builtin_memcpy(key.addr, addr, 16);
    u8 one = 1;
    return seen_patterns.insert(&key, &one) == 0; /* fails when already there */
}

static __always_inline int binding_changed(const u8 *mac, u16 family, const u8 *addr)
{
    struct nw_ip_key key = {.family = family};
    __builtin_memcpy(key.addr, addr, 16);
    struct nw_mac *owner = ip_owner.lookup(&key);
    if (owner && same_mac(owner->addr, mac))
        return 0;
    struct nw_mac now = {};
    __builtin_memcpy(now.addr, mac, 6);
    ip_owner.update(&key, &now);
    return 1;
}

static __always_inline u32 pattern_hash(struct nw_pkt *p)
{
    u32 a[4];
    __builtin_memcpy(a, p->daddr, 16);
    return (a[0] ^ a[1] ^ a[2] ^ a[3]) * 31 + ((u32)p->dport << 8) + p->transport + 1;
}

/* A repeat of the device's previous pattern skips the LRU: a flow's packets cost one compare. */
static __always_inline void report_pattern(struct __sk_buff *skb, struct nw_dev_counters *c, const u8 *mac,
                                           const u8 *peer_mac, u16 vlan, struct nw_pkt *p)
{
    u32 h = pattern_hash(p);
    if (c->last_pattern == h)
        return;
    c->last_pattern = h;
    if (first_seen(mac, NW_EV_PATTERN, p, p->daddr, p->dport))
        emit(skb, NW_EV_PATTERN, NW_DIR_TX, mac, peer_mac, vlan, p);
}

/* A TCP connection start of the device: SYNs only, so other packets pay nothing for this. */
static __always_inline void note_start(const u8 *mac, struct nw_pkt *p)
{
#if NW_BEACON_PAIRS > 0
    struct nw_beacon_key key = {};
    __builtin_memcpy(key.mac, mac, 6);
    key.port = p->dport;
    key.family = p->family;
    __builtin_memcpy(key.addr, p->daddr, 16);
    struct nw_beacon_starts *s = beacon_pairs.lookup(&key);
    if (!s) {
        struct nw_beacon_starts fresh = {.last_ns = bpf_ktime_get_boot_ns(), .count = 1, .last_sport = p->sport};
        beacon_pairs.update(&key, &fresh);
        return;
    }
    if (s->last_sport == p->sport)
        return; /* the same connection's SYN again: a retransmission, not a new start */
    s->prev_ns = s->last_ns;
    s->last_ns = bpf_ktime_get_boot_ns();
    s->count += 1;
    s->last_sport = p->sport;
#endif
}

static __always_inline int is_http_request(const u8 *h)
{
    u32 w = (u32)h[0] | ((u32)h[1] << 8) | ((u32)h[2] << 16) | ((u32)h[3] << 24);
#define NW_W(a, b, c, d) ((u32)(a) | ((u32)(b) << 8) | ((u32)(c) << 16) | ((u32)(d) << 24))
    return w == NW_W('G', 'E', 'T', ' ') || w == NW_W('P', 'O', 'S', 'T') || w == NW_W('H', 'E', 'A', 'D') ||
           w == NW_W('P', 'U', 'T', ' ') || w == NW_W('D', 'E', 'L', 'E') || w == NW_W('O', 'P', 'T', 'I') ||
           w == NW_W('P', 'A', 'T', 'C') || w == NW_W('C', 'O', 'N', 'N') || w == NW_W('T', 'R', 'A', 'C');
#undef NW_W
}

static __always_inline void parse_l4(void *data, void *end, u32 off, u32 l4len, u8 proto, struct nw_pkt *p)
{
    p->transport = proto;
    if (off > NW_MAX_L4_OFFSET)
        return;
    if (proto == IPPROTO_TCP) {
        struct nw_tcp *t = data + off;
        if ((void *)(t + 1) > end)
            return;
        u32 doff = (t->doff_res >> 4) * 4;
        p->pclass = NW_P_TCP;
        p->tcp_flags = t->flags;
        p->sport = ntohs(t->sport);
        p->dport = ntohs(t->dport);
        if (doff >= 20 && l4len >= doff) {
            p->payload_off = off + doff;
            p->payload_len = l4len - doff;
        }
    } else if (proto == IPPROTO_UDP) {
        struct nw_udp *u = data + off;
        if ((void *)(u + 1) > end)
            return;
        p->pclass = NW_P_UDP;
        p->sport = ntohs(u->sport);
        p->dport = ntohs(u->dport);
        if (l4len >= 8) {
            p->payload_off = off + 8;
            p->payload_len = l4len - 8;
        }
    } else if (proto == IPPROTO_ICMP || proto == NW_IPPROTO_ICMPV6) {
        p->pclass = proto == IPPROTO_ICMP ? NW_P_ICMP : NW_P_ICMPV6;
        u8 *type = data + off;
        if ((void *)(type + 1) <= end)
            p->icmp_type = *type;
    }
}

static __always_inline int handle(struct __sk_buff *skb, int dir)
{
    void *data = (void *)(long)skb->data;
    void *end = (void *)(long)skb->data_end;
    struct nw_eth *eth = data;
    if ((void *)(eth + 1) > end) {
        count_loss(NW_LOSS_MALFORMED);
        return TC_ACT_UNSPEC;
    }
    const u8 *mac = dir == NW_DIR_TX ? eth->src : eth->dst;
    const u8 *peer_mac = dir == NW_DIR_TX ? eth->dst : eth->src;
    if (mac[0] & 1) /* broadcast or multicast: not a device */
        return TC_ACT_UNSPEC;

    u16 vlan = skb->vlan_present ? (skb->vlan_tci & 0xfff) : 0;
    u16 proto = eth->proto;
    u32 off = sizeof(*eth);
#pragma unroll
    for (int i = 0; i < 2; i++) {
        if (proto == htons(NW_ETH_P_8021Q) || proto == htons(NW_ETH_P_8021AD)) {
            struct nw_vlan *vh = data + off;
            if ((void *)(vh + 1) > end) {
                count_loss(NW_LOSS_MALFORMED);
                return TC_ACT_UNSPEC;
            }
            vlan = ntohs(vh->tci) & 0xfff;
            proto = vh->proto;
            off += sizeof(*vh);
        }
    }

    struct nw_mac key = {};
    __builtin_memcpy(key.addr, mac, 6);
    struct nw_dev_counters *c = devices.lookup(&key);
    struct nw_pkt p = {};
    int first_frame = 0;
    if (!c) {
        /* No ring record for a new device: user space finds it in this map at its next read
         * (every tick), with when and where it was first seen. A flood of forged MACs then
         * costs an LRU insert per frame, not a record the ring and the daemon must carry. */
        struct nw_dev_counters fresh = {};
        fresh.created_ns = bpf_ktime_get_boot_ns();
        fresh.ifindex = skb->ifindex;
        fresh.vlan = vlan;
        first_frame = devices.insert(&key, &fresh) == 0;
        c = devices.lookup(&key);
        if (!c) { /* the LRU found no room (every entry busy on other CPUs): rare, counted */
            count_loss(NW_LOSS_DEVICES);
            return TC_ACT_UNSPEC;
        }
    }

    p.pclass = NW_P_OTHER;
    if (proto == htons(NW_ETH_P_ARP)) {
        p.pclass = NW_P_ARP;
        struct nw_arp *a = data + off;
        if ((void *)(a + 1) <= end) {
            u32 spa;
            __builtin_memcpy(&spa, a->spa, 4);
            int ether_ip = a->htype == htons(1) && a->ptype == htons(NW_ETH_P_IP);
            if (ether_ip && (a->hlen != 6 || a->plen != 4)) {
                count_loss(NW_LOSS_MALFORMED); /* the addresses are not where we would read them */
            } else if (dir == NW_DIR_TX && ether_ip && spa != 0 && same_mac(a->sha, mac)) {
                /* only a device's own ARP binds an address to it: an ARP whose sender MAC is
                 * not the frame's source could put an address on someone else */
                p.family = 2;
                __builtin_memcpy(p.saddr, a->spa, 4);
                if (binding_changed(mac, p.family, p.saddr))
                    emit(skb, NW_EV_ADDRESS, dir, mac, peer_mac, vlan, &p);
                /* whom it asks for: first-seen targets of its ARP requests (an address sweep,
                 * `nmap -sn`, asks for every address of a subnet) as patterns of NW_T_ARP */
                u32 tpa;
                __builtin_memcpy(&tpa, a->tpa, 4);
                if (a->op == htons(1) && tpa != 0 && tpa != spa && !first_frame) {
                    __builtin_memcpy(p.daddr, a->tpa, 4);
                    p.transport = NW_T_ARP;
                    report_pattern(skb, c, mac, peer_mac, vlan, &p);
                }
            }
        } else {
            count_loss(NW_LOSS_MALFORMED);
        }
    } else if (proto == htons(NW_ETH_P_IP)) {
        p.pclass = NW_P_IPV4;
        p.family = 2;
        struct nw_ip4 *ip = data + off;
        if ((void *)(ip + 1) > end) {
            count_loss(NW_LOSS_MALFORMED);
            goto count;
        }
        u32 hlen = (ip->ver_ihl & 0xf) * 4;
        u32 tot = ntohs(ip->tot_len);
        if ((ip->ver_ihl >> 4) != 4 || hlen < 20 || tot < hlen) {
            count_loss(NW_LOSS_MALFORMED);
            goto count;
        }
        __builtin_memcpy(p.saddr, ip->saddr, 4);
        __builtin_memcpy(p.daddr, ip->daddr, 4);
        if (ntohs(ip->frag_off) & 0x1fff) /* not the first fragment: no transport header */
            goto count;
        parse_l4(data, end, off + hlen, tot - hlen, ip->protocol, &p);
    } else if (proto == htons(NW_ETH_P_IPV6)) {
        p.pclass = NW_P_IPV6;
        p.family = 10;
        struct nw_ip6 *ip6 = data + off;
        if ((void *)(ip6 + 1) > end || (ip6->ver_tc_flow & 0xf0) != 0x60) {
            count_loss(NW_LOSS_MALFORMED);
            goto count;
        }
        __builtin_memcpy(p.saddr, ip6->saddr, 16);
        __builtin_memcpy(p.daddr, ip6->daddr, 16);
        u8 nh = ip6->nexthdr;
        u32 l4off = off + sizeof(*ip6);
        u32 l4len = ntohs(ip6->payload_len);
#pragma unroll
        for (int i = 0; i < 4; i++) {
            if (nh != 0 && nh != 43 && nh != 60 && nh != 44)
                break;
            if (l4off > NW_MAX_L4_OFFSET)
                goto count;
            struct nw_ext6 *x = data + l4off;
            if ((void *)(x + 1) > end)
                goto count;
            u32 xlen = nh == 44 ? 8 : ((u32)x->len + 1) * 8;
            if (nh == 44 && (ntohs(x->frag_off) & 0xfff8))
                goto count; /* not the first fragment */
            if (l4len < xlen)
                goto count;
            nh = x->nexthdr;
            l4off += xlen;
            l4len -= xlen;
        }
        parse_l4(data, end, l4off, l4len, nh, &p);
        /* NDP tells us which addresses a device uses (its link-local one at least) */
        if (p.pclass == NW_P_ICMPV6 && dir == NW_DIR_TX && l4off <= NW_MAX_L4_OFFSET) {
            struct nw_icmp6 *ic = data + l4off;
            if ((void *)(ic + 1) <= end && ic->type >= 133 && ic->type <= 136) {
                u32 src0;
                __builtin_memcpy(&src0, p.saddr, 4);
                /* NA and DAD probes (NS from ::) name their target; RS, RA, NS their source */
                const u8 *addr = (ic->type == 136 || (ic->type == 135 && src0 == 0)) ? ic->target : p.saddr;
                u8 bound[16];
                __builtin_memcpy(bound, addr, 16);
                if (binding_changed(mac, p.family, bound)) {
                    struct nw_pkt q = p;
                    __builtin_memcpy(q.saddr, bound, 16);
                    emit(skb, NW_EV_ADDRESS, dir, mac, peer_mac, vlan, &q);
                }
            }
        }
    }

    /* A MAC's very first frame reports no pattern: a forged MAC sends one frame (macof), and its
     * pattern would be a ring record and an LRU insert for nothing; a real device's first
     * pattern is reported with its next frame of that pattern (its first frame is an ARP
     * request anyway, to find its peer). */
    if (dir == NW_DIR_TX) {
        if (p.pclass == NW_P_TCP && (p.tcp_flags & (NW_TCP_SYN | NW_TCP_ACK)) == NW_TCP_SYN) {
            c->tcp_syns += 1;
            note_start(mac, &p);
            if (!first_frame)
                report_pattern(skb, c, mac, peer_mac, vlan, &p);
        } else if (p.pclass == NW_P_UDP && !first_frame) {
            report_pattern(skb, c, mac, peer_mac, vlan, &p);
        } else if (!first_frame && ((p.pclass == NW_P_ICMP && p.icmp_type == 8) ||
                                    (p.pclass == NW_P_ICMPV6 && p.icmp_type == 128))) {
            report_pattern(skb, c, mac, peer_mac, vlan, &p); /* echo requests: a ping sweep's targets */
        }
    }
    if (p.pclass == NW_P_UDP) {
        if ((dir == NW_DIR_TX && p.dport == 53) || (dir == NW_DIR_RX && p.sport == 53)) {
            if (setting(NW_SET_DNS))
                emit_snippet(skb, c, NW_APP_DNS, dir, mac, peer_mac, vlan, &p);
        } else if (dir == NW_DIR_TX && ((p.dport == 67 && p.sport == 68) || (p.dport == 68 && p.sport == 67))) {
            /* a client's request, or a server's reply (who serves DHCP on the LAN) */
            if (setting(NW_SET_DHCP))
                emit_snippet(skb, c, NW_APP_DHCP, dir, mac, peer_mac, vlan, &p);
        }
    } else if (p.pclass == NW_P_TCP && dir == NW_DIR_TX && p.payload_len >= 6) {
        u8 head[6] = {};
        if (bpf_skb_load_bytes(skb, p.payload_off, head, 6) == 0) {
            if (head[0] == 0x16 && head[1] == 0x03 && head[5] == 0x01) { /* TLS handshake: ClientHello */
                if (setting(NW_SET_TLS))
                    emit_snippet(skb, c, NW_APP_TLS, dir, mac, peer_mac, vlan, &p);
            } else if (is_http_request(head)) {
                if (setting(NW_SET_HTTP))
                    emit_snippet(skb, c, NW_APP_HTTP, dir, mac, peer_mac, vlan, &p);
            }
        }
    }

count:;
    u32 slot = dir * NW_NPROTO + (p.pclass & 7);
    c->packets[slot] += 1;
    c->bytes[slot] += skb->len;
    return TC_ACT_UNSPEC;
}

int nw_tc_ingress(struct __sk_buff *skb) { return handle(skb, NW_DIR_TX); }
int nw_tc_egress(struct __sk_buff *skb) { return handle(skb, NW_DIR_RX); }
