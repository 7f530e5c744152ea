/* Yardsticks for netwatchd's TC classifier, attached beside it (TCX links) in the same run on
 * the same interfaces by bench/device_floors.py. All return TC_ACT_UNSPEC: the next program on
 * the hook runs, the packet goes on untouched.
 *
 *   floor_count_in / _eg   bump one per-CPU counter and nothing else: the least a classifier
 *                          that counts packets can cost.
 *   floor_mac_in / _eg     bump a counter keyed by the device's MAC (source on ingress,
 *                          destination on egress) in a hash: the least per-device counting costs.
 *   ref_ring_in            one ring-buffer record per packet, submitted with the default
 *                          wakeup, as per-packet tracing tools do; a user-space consumer polls it.
 */
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>

BPF_PERCPU_ARRAY(floor_counter, u64, 1);

struct floor_mac_key {
    u8 addr[6];
    u16 pad;
};
BPF_HASH(floor_macs, struct floor_mac_key, u64, 4096);

static __always_inline int count(void)
{
    u32 zero = 0;
    u64 *v = floor_counter.lookup(&zero);
    if (v)
        (*v)++;
    return TC_ACT_UNSPEC;
}

int floor_count_in(struct __sk_buff *skb) { return count(); }
int floor_count_eg(struct __sk_buff *skb) { return count(); }

static __always_inline int count_by_mac(struct __sk_buff *skb, int off)
{
    void *data = (void *)(long)skb->data;
    void *end = (void *)(long)skb->data_end;
    if (data + 14 > end)
        return TC_ACT_UNSPEC;
    struct floor_mac_key key = {};
    __builtin_memcpy(key.addr, data + off, 6);
    u64 *v = floor_macs.lookup(&key);
    if (v) {
        __sync_fetch_and_add(v, 1);
    } else {
        u64 one = 1;
        floor_macs.update(&key, &one);
    }
    return TC_ACT_UNSPEC;
}

int floor_mac_in(struct __sk_buff *skb) { return count_by_mac(skb, 6); }
int floor_mac_eg(struct __sk_buff *skb) { return count_by_mac(skb, 0); }

struct ref_packet {
    u64 ts_ns;
    u32 ifindex;
    u32 len;
    u32 protocol;
    u32 mark;
    u8 eth[16]; /* destination, source, type */
};

BPF_RINGBUF_OUTPUT(ref_packets, REF_RING_PAGES);

int ref_ring_in(struct __sk_buff *skb)
{
    void *data = (void *)(long)skb->data;
    void *end = (void *)(long)skb->data_end;
    struct ref_packet *e = ref_packets.ringbuf_reserve(sizeof(struct ref_packet));
    if (!e)
        return TC_ACT_UNSPEC;
    e->ts_ns = bpf_ktime_get_ns();
    e->ifindex = skb->ifindex;
    e->len = skb->len;
    e->protocol = skb->protocol;
    e->mark = skb->mark;
    if (data + 16 <= end)
        __builtin_memcpy(e->eth, data, 16);
    else
        __builtin_memset(e->eth, 0, 16);
    ref_packets.ringbuf_submit(e, 0); /* default: wake the consumer when it is waiting */
    return TC_ACT_UNSPEC;
}
