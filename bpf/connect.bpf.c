/* netwatchd connect path: counts every connect() per process under its final outcome, and
 * sends one record per call through a ring buffer without waking user space.
 *
 *   cgroup connect4/6    notes the destination and the transport read from the socket and,
 *                        for TCP, the socket and the time its handshake starts
 *   cgroup sock_ops      TCP's own callbacks: TCP_CONNECT_CB asks for the socket's state
 *                        changes, and SYN_SENT -> ESTABLISHED or CLOSE ends the handshake:
 *                        counted under a followed handshake's process (histogram, a
 *                        handshake-end record), else left in `ended` for connect()'s return
 *   tcp_receive_reset    (a raw tracepoint, two programs) marks the socket an RST is
 *                        closing (refused, even if sk_err was read)
 *   sys_exit_connect     counts the outcome per process and emits the record; takes a
 *                        handshake's end from `ended`, or follows a pending one in
 *                        `handshakes`; for what the cgroup hook never sees (unix sockets,
 *                        early failures) it reads the caller's sockaddr
 *   cgroup sendmsg4/6    counts and records unconnected UDP sends
 *   sched_process_exec   moves a process's counters under its old command name (rare)
 *
 * Settings arrive as -D cflags from netwatchd/kernel/connect_probe.py:
 *   NW_MAX_PROCS, NW_PENDING_SLOTS (power of two), NW_RING_PAGES, NW_RECORD_EVENTS (0: counts
 *   only, no per-connect records), NW_MAX_HANDSHAKES, NW_MAX_LATENCY_KEYS, NW_ENDED_ENTRIES.
 *   The sendmsg hooks are attached only when UDP sends are traced.
 *   NW_SOCKADDR_AT_ENTER (chosen by netwatchd/kernel/features.py): 0 = read the caller's sockaddr
 *   through bpf_task_pt_regs when needed (Linux >= 5.15); 1 = a sys_enter_connect tracepoint
 *   notes the address argument of every connect() (any kernel; one more program run per call).
 *   NW_SK_ERR_OFFSET: offset of sk_err in struct sock, from the running kernel's BTF (-1: not
 *   known; a handshake that fails after connect() returned is then other_failed).
 *   NW_SK_STATE_OFFSET: offset of skc_state (BTF's, else 18).
 *   NW_SOCKOPS_CURRENT_TASK: 1 if sock_ops programs may call bpf_get_current_pid_tgid (probed): an
 *   end inside its own connect() then goes into the thread's `pending` slot, not `ended`.
 * Only tracepoints, cgroup hooks, helpers and uapi types: it loads whatever the kernel headers.
 *
 * Why the handshake's end is a sock_ops callback and not the sock:inet_sock_set_state
 * tracepoint: a tracepoint program does not run when the CPU is already inside a tracing BPF
 * program (the kernel counts it in the program's recursion_misses and moves on). A handshake
 * that times out ends in a timer softirq, which may interrupt our sys_exit_connect on that CPU:
 * under load a few in a hundred timed-out handshakes were never counted. A raw tracepoint is
 * skipped only when it would interrupt itself, yet it lost 52-106 of 20000 refusals steered to
 * another CPU (test_connect_outcomes_exact), even with a second program attached to take what
 * the first missed; and it ran 6.5 times per loopback connection at 68-139 ns a run, more than
 * sock_ops costs here (issue 24's measurement). TCP calls sock_ops programs itself, with no such
 * guard: a few callbacks of every TCP socket (one compare each), and the state changes only of
 * the sockets that asked (one bit per socket).
 *
 * Records: one size (struct nw_conn_event) in `events`, which user space maps and reads as one
 * array; when it is full, a new flow's first record goes to `events_reserve` (send_record);
 * the rare longer records (unix sockets) go to `events_long`. NW_RESERVE_RING_PAGES,
 * NW_LONG_RING_PAGES and NW_FLOWS_SEEN size them. */
#include <linux/errno.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <linux/socket.h>
#include <linux/un.h>
#include "connect.h"

#ifndef AF_INET
#define AF_INET 2
#endif
#ifndef AF_INET6
#define AF_INET6 10
#endif
#ifndef AF_UNIX
#define AF_UNIX 1
#endif
#define NW_SOCK_STREAM 1
#define NW_SOCK_DGRAM 2
#define NW_TCP_ESTABLISHED 1 /* include/net/tcp_states.h */
#define NW_TCP_SYN_SENT 2
#define NW_TCP_SYN_RECV 3
#define NW_TCP_CLOSE 7
/* uapi/linux/bpf.h, spelled out for old kernel headers */
#define NW_SOCK_OPS_TCP_CONNECT_CB 3
#define NW_SOCK_OPS_STATE_CB 10
#define NW_SOCK_OPS_STATE_CB_FLAG (1 << 2)
#ifndef NW_SK_ERR_OFFSET
#define NW_SK_ERR_OFFSET -1
#endif
#ifndef NW_SK_STATE_OFFSET
#define NW_SK_STATE_OFFSET 18 /* skc_state in struct sock_common */
#endif

/* bcc turns bpf_probe_read_kernel into the old bpf_probe_read where it believes the kernel lacks
 * the former (it did in a booted systemd container on a 6.18 host). The cgroup programs below
 * may only call the former, so every read of the kernel's memory here calls it by its number:
 * every kernel we support has it (Linux >= 5.5). */
static long (*nw_read_kernel)(void *dst, u32 size, const void *unsafe_ptr) =
    (void *)BPF_FUNC_probe_read_kernel;

/* A socket as a number: the key of `handshakes` and `ended` (the connect hook and sock_ops see
 * the same address), and the base of kernel reads (the verifier allows no arithmetic on a
 * socket pointer). */
static __always_inline u64 sk_number(struct bpf_sock *s)
{
    u64 sk = 0;
    nw_read_kernel(&sk, sizeof(sk), &s);
    return sk;
}

BPF_HASH(proc_counts, u32, struct nw_proc_entry, NW_MAX_PROCS);
BPF_HASH(retired_counts, struct nw_retired_key, struct nw_proc_entry, NW_MAX_PROCS);
BPF_ARRAY(pending, struct nw_pending, NW_PENDING_SLOTS);
/* Per-connect records, all of one size (struct nw_conn_event): user space maps the ring and reads
 * every committed record as one array (netwatchd/kernel/mapped_ring.py). */
BPF_RINGBUF_OUTPUT(events, NW_RING_PAGES);
/* Where a new flow's first record goes while `events` is full (see send_record). */
BPF_RINGBUF_OUTPUT(events_reserve, NW_RESERVE_RING_PAGES);
/* The rare longer records (struct nw_conn_event_long: unix sockets, early failures), apart so
 * that `events` holds one size only. */
BPF_RINGBUF_OUTPUT(events_long, NW_LONG_RING_PAGES);
/* Flows that already had a record through the reserve ring since user space last drained, by the
 * drain generation user space writes into drain_gen[0] at every drain. Touched only while
 * `events` is full. */
BPF_TABLE("lru_hash", struct nw_flow_key, u32, flows_seen, NW_FLOWS_SEEN);
BPF_ARRAY(drain_gen, u32, 1);
BPF_HASH(handshakes, u64, struct nw_handshake, NW_MAX_HANDSHAKES);
/* Per CPU: every connect of a busy command hits the same few cells, and one shared cell's cache
 * line bouncing between CPUs cost more than the rest of sys_exit_connect. User space sums. */
BPF_PERCPU_HASH(latency, struct nw_latency_key, struct nw_latency_cell, NW_MAX_LATENCY_KEYS);
/* [0] records that found both rings full, [1] processes that found proc_counts full,
 * [2] handshakes that found `handshakes` full (counted unknown), [3] handshake ends whose
 * process counters were already freed, [4] latencies that found `latency` full, [5] records of
 * a flow that already had one since the last drain, dropped while `events` was full. */
#define NW_LOSS_RING 0
#define NW_LOSS_PROCS 1
#define NW_LOSS_HANDSHAKES 2
#define NW_LOSS_LATE_END 3
#define NW_LOSS_LATENCY 4
#define NW_LOSS_REPEAT 5
BPF_PERCPU_ARRAY(losses, u64, 6);

static __always_inline void count_loss(int which)
{
    u64 *v = losses.lookup(&which);
    if (v)
        (*v)++;
}

/* Sends one record, built on the caller's stack. When user space falls behind and `events` is
 * full, what is dropped is chosen: a flow (process, destination, port) that already had a record
 * since the last drain loses this one (counted NW_LOSS_REPEAT; its counts stay exact in
 * proc_counts), and the first record of any other flow goes to `events_reserve`, so a flood
 * cannot hide a new destination from the beacon and fan-out detectors. Only when the reserve is
 * full too is a first record lost (NW_LOSS_RING). The flow map is touched only on this path: it
 * costs nothing while the ring has room.
 * bpf_ringbuf_output (a copy of 80 bytes) rather than reserve/submit: two reservations that may
 * each be null, merged into one pointer, leave 5.10's verifier with a reference it thinks may
 * leak ("Unreleased reference"). */
static __always_inline void send_record(struct nw_conn_event *e)
{
    if (events.ringbuf_output(e, sizeof(*e), BPF_RB_NO_WAKEUP) == 0)
        return;
    int zero = 0;
    u32 *gen = drain_gen.lookup(&zero);
    if (!gen)
        return;
    struct nw_flow_key key = {.tgid = e->tgid, .family = e->family, .port = e->port};
    __builtin_memcpy(key.addr, e->addr, 16);
    u32 *seen = flows_seen.lookup(&key);
    if (seen && *seen == *gen) {
        count_loss(NW_LOSS_REPEAT);
        return;
    }
    if (events_reserve.ringbuf_output(e, sizeof(*e), BPF_RB_NO_WAKEUP) != 0) {
        count_loss(NW_LOSS_RING); /* not remembered: the flow's next record may take the reserve */
        return;
    }
    u32 now_gen = *gen;
    flows_seen.update(&key, &now_gen);
}

static __always_inline struct nw_proc_entry *proc_entry(u32 tgid)
{
    struct nw_proc_entry *c = proc_counts.lookup(&tgid);
    if (c)
        return c;
    struct nw_proc_entry fresh = {};
    bpf_get_current_comm(&fresh.comm, sizeof(fresh.comm));
    proc_counts.insert(&tgid, &fresh); /* another thread may win the race: both use its entry */
    c = proc_counts.lookup(&tgid);
    if (!c)
        count_loss(NW_LOSS_PROCS);
    return c;
}

/* Copies an entry to retired_counts and restarts it at zero under the next generation. Called
 * only when nothing else can be counting into it: at exec every other thread of the process is
 * gone, and at fork the pid's previous owner is dead and reaped. */
static __always_inline void retire(u32 tgid, struct nw_proc_entry *c)
{
    struct nw_retired_key key = {.tgid = tgid, .gen = c->gen};
    if (retired_counts.update(&key, c) != 0) {
        count_loss(NW_LOSS_PROCS);
        return; /* keep counting under the old generation rather than lose counts */
    }
    __builtin_memset(&c->counts, 0, sizeof(c->counts));
    asm volatile("" ::: "memory");
    c->gen += 1; /* last: a reader that sees the new gen sees zeroed counts */
}

TRACEPOINT_PROBE(sched, sched_process_exec)
{
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    struct nw_proc_entry *c = proc_counts.lookup(&tgid);
    if (c) {
        retire(tgid, c);
        bpf_get_current_comm(&c->comm, sizeof(c->comm)); /* already the new program's name */
    }
    return 0;
}

/* A new process whose pid still has an entry from a dead one must not inherit its command. */
TRACEPOINT_PROBE(sched, sched_process_fork)
{
    u32 child = args->child_pid;
    struct nw_proc_entry *c = proc_counts.lookup(&child);
    if (c) {
        retire(child, c);
        bpf_get_current_comm(&c->comm, sizeof(c->comm)); /* the child starts with its parent's name */
    }
    return 0;
}

static __always_inline u8 transport_of(u32 type, u32 protocol)
{
    if (type == NW_SOCK_STREAM && (protocol == IPPROTO_TCP || protocol == 0))
        return NW_TRANSPORT_TCP;
    if (type == NW_SOCK_DGRAM && (protocol == IPPROTO_UDP || protocol == 0))
        return NW_TRANSPORT_UDP;
    return NW_TRANSPORT_OTHER;
}

/* The cgroup hook runs inside connect() for inet sockets only: it sees the destination as the
 * kernel copied it, and the socket's type and protocol. */
static __always_inline int note_inet_connect(struct bpf_sock_addr *ctx, u16 family)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    u32 slot = tid & (NW_PENDING_SLOTS - 1);
    struct nw_pending *p = pending.lookup(&slot);
    if (!p)
        return 1;
    p->tid = tid;
    p->family = family;
    p->port = ntohs((u16)ctx->user_port);
    p->transport = transport_of(ctx->type, ctx->protocol);
    p->end_outcome = 0;
    p->exiting = 0;
    p->sk = 0;
    if (p->transport == NW_TRANSPORT_TCP) {
        /* The handshake starts here, where bcc's tcpconnlat starts it too: the SYN is built
         * next, after the route and the local port are chosen. */
        p->sk = sk_number(ctx->sk);
        p->syn_ns = bpf_ktime_get_boot_ns();
    }
    if (family == AF_INET) {
        u32 a4 = ctx->user_ip4;
        __builtin_memcpy(p->addr, &a4, 4);
    } else {
        u32 a6[4] = {ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3]};
        __builtin_memcpy(p->addr, a6, 16);
    }
    return 1; /* never change the verdict */
}

int nw_connect4(struct bpf_sock_addr *ctx) { return note_inet_connect(ctx, AF_INET); }
int nw_connect6(struct bpf_sock_addr *ctx) { return note_inet_connect(ctx, AF_INET6); }

#ifndef NW_SOCKADDR_AT_ENTER
#define NW_SOCKADDR_AT_ENTER 0
#endif

#if NW_SOCKADDR_AT_ENTER
/* Kernels before 5.15 have no bpf_task_pt_regs (nor bpf_get_current_task_btf before 5.11): the
 * syscall's own arguments, which every kernel's sys_enter_connect tracepoint has, are noted per
 * thread here and read back at exit. Costs one more program run per connect(). */
struct nw_user_sockaddr {
    u32 tid;
    u32 len;
    u64 uaddr;
};
BPF_ARRAY(entry_sockaddr, struct nw_user_sockaddr, NW_PENDING_SLOTS);

#if NW_RECORD_EVENTS /* counts alone never need the address: no program at all then */
TRACEPOINT_PROBE(syscalls, sys_enter_connect)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    u32 slot = tid & (NW_PENDING_SLOTS - 1);
    struct nw_user_sockaddr *s = entry_sockaddr.lookup(&slot);
    if (s) {
        s->tid = tid;
        s->len = (u32)args->addrlen;
        s->uaddr = (u64)args->uservaddr;
    }
    return 0;
}
#endif

static __always_inline int user_sockaddr_args(u64 *uaddr, u64 *ulen)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    u32 slot = tid & (NW_PENDING_SLOTS - 1);
    struct nw_user_sockaddr *s = entry_sockaddr.lookup(&slot);
    if (!s || s->tid != tid)
        return -1;
    *uaddr = s->uaddr;
    *ulen = s->len;
    s->tid = 0; /* consumed */
    return 0;
}
#else
/* No cgroup hook ran (unix socket, or connect() failed before reaching the socket): read the
 * caller's sockaddr through the syscall's saved registers. Rare, so its cost stays off the
 * common path; a second tracepoint on sys_enter_connect would cost every connect. */
static long (*nw_task_pt_regs)(void *task) = (void *)BPF_FUNC_task_pt_regs;
static void *(*nw_current_task_btf)(void) = (void *)BPF_FUNC_get_current_task_btf;

static __always_inline int user_sockaddr_args(u64 *uaddr, u64 *ulen)
{
    struct pt_regs *regs = (struct pt_regs *)nw_task_pt_regs(nw_current_task_btf());
    nw_read_kernel(uaddr, sizeof(*uaddr), &PT_REGS_PARM2(regs));
    nw_read_kernel(ulen, sizeof(*ulen), &PT_REGS_PARM3(regs));
    return 0;
}
#endif

static __always_inline void read_user_sockaddr(struct nw_conn_event_long *l)
{
    struct nw_conn_event *e = &l->ev;
    u64 uaddr = 0, ulen = 0;
    if (user_sockaddr_args(&uaddr, &ulen) != 0)
        return;
    u16 family = 0;
    if (bpf_probe_read_user(&family, sizeof(family), (void *)uaddr) != 0)
        return;
    e->family = family;
    if (family == AF_UNIX) {
        e->transport = NW_TRANSPORT_OTHER; /* neither TCP nor UDP, whatever its type */
        /* sun_path follows the 2-byte family; an abstract name starts with a 0 byte. */
        u32 n = (u32)ulen > 2 ? (u32)ulen - 2 : 0;
        if (n > NW_PATH_LEN)
            n = NW_PATH_LEN;
        if (n > 0 && bpf_probe_read_user(l->path, n & 0xff, (void *)(uaddr + 2)) == 0)
            e->path_len = n;
    } else if (family == AF_INET) {
        struct sockaddr_in sin = {};
        bpf_probe_read_user(&sin, sizeof(sin), (void *)uaddr);
        e->port = ntohs(sin.sin_port);
        __builtin_memcpy(e->addr, &sin.sin_addr, 4);
    } else if (family == AF_INET6) {
        struct sockaddr_in6 sin6 = {};
        bpf_probe_read_user(&sin6, sizeof(sin6), (void *)uaddr);
        e->port = ntohs(sin6.sin6_port);
        __builtin_memcpy(e->addr, &sin6.sin6_addr, 16);
    }
}

static __always_inline void fill_common(struct nw_conn_event *e, struct nw_proc_entry *c, u32 tgid, u32 tid,
                                        long ret)
{
    e->boot_ns = bpf_ktime_get_boot_ns();
    e->tgid = tgid;
    e->tid = tid;
    e->uid = (u32)bpf_get_current_uid_gid();
    e->ret = ret;
    e->kind = NW_KIND_CONNECT;
    e->port = 0;
    e->path_len = 0;
    e->syn_ns = 0;
    e->latency_usec = 0;
    e->end_err = 0;
    __builtin_memcpy(e->comm, c->comm, NW_COMM_LEN);
}

static __always_inline void count_outcome(struct nw_counts *n, u8 outcome)
{
    switch (outcome) {
    case NW_OUT_SUCCEEDED:
        __sync_fetch_and_add(&n->succeeded, 1);
        break;
    case NW_OUT_REFUSED:
        __sync_fetch_and_add(&n->refused, 1);
        break;
    case NW_OUT_TIMED_OUT:
        __sync_fetch_and_add(&n->timed_out, 1);
        break;
    case NW_OUT_UNKNOWN:
        __sync_fetch_and_add(&n->unknown, 1);
        break;
    default:
        __sync_fetch_and_add(&n->other_failed, 1);
    }
}

static __always_inline u8 outcome_of_errno(long err)
{
    if (err == 0)
        return NW_OUT_SUCCEEDED;
    if (err == ECONNREFUSED)
        return NW_OUT_REFUSED;
    if (err == ETIMEDOUT)
        return NW_OUT_TIMED_OUT;
    return NW_OUT_OTHER_FAILED;
}

/* floor(log2(usec)) + 1, so slot k holds [2^(k-1), 2^k) us and slot 0 holds 0 us. */
static __always_inline u32 latency_slot(u64 usec)
{
    u32 slot = 0;
#pragma unroll
    for (int shift = 32; shift > 0; shift >>= 1) {
        if (usec >= ((u64)1 << shift)) {
            usec >>= shift;
            slot += shift;
        }
    }
    slot = usec ? slot + 1 : 0;
    return slot < NW_LATENCY_SLOTS ? slot : NW_LATENCY_SLOTS - 1;
}

/* Adds one handshake to this CPU's histogram cell, creating it. One map operation per
 * handshake: the cell holds its count and its sum. */
static __always_inline void add_latency(const char *comm, u16 family, u16 port, const u8 *addr, u64 usec)
{
    struct nw_latency_key key = {};
    __builtin_memcpy(key.comm, comm, NW_COMM_LEN);
    __builtin_memcpy(key.addr, addr, 16);
    key.family = family;
    key.port = port;
    key.slot = latency_slot(usec);
    struct nw_latency_cell *cell = latency.lookup(&key);
    if (!cell) {
        struct nw_latency_cell fresh = {.count = 1, .sum_usec = usec};
        if (latency.insert(&key, &fresh) == 0)
            return;
        cell = latency.lookup(&key);
        if (!cell) {
            count_loss(NW_LOSS_LATENCY);
            return;
        }
    }
    __sync_fetch_and_add(&cell->count, 1);
    __sync_fetch_and_add(&cell->sum_usec, usec);
}

static __always_inline s32 sk_error(u64 sk)
{
    s32 err = 0;
    if (NW_SK_ERR_OFFSET >= 0)
        nw_read_kernel(&err, sizeof(err), (void *)(sk + NW_SK_ERR_OFFSET));
    return err;
}

/* Counts a handshake that ended after connect() returned under the process that began it. */
static __always_inline void count_late_end(struct nw_handshake *h, u8 outcome)
{
    struct nw_proc_entry *c = proc_counts.lookup(&h->tgid);
    if (!c || c->gen != h->gen) {
        struct nw_retired_key key = {.tgid = h->tgid, .gen = h->gen};
        c = retired_counts.lookup(&key);
    }
    if (!c) {
        count_loss(NW_LOSS_LATE_END);
        return;
    }
    count_outcome(&c->counts, outcome);
}

/* The sockets whose RSTs this CPU handled lately: tcp_reset() fires tcp_receive_reset, sets
 * sk_err and closes the socket, all on this CPU in one go. A caller polling the socket may read
 * (and so clear) sk_err before the close reaches nw_sockops: the mark still says "refused".
 * A raw tracepoint, not a (perf) tracepoint: the kernel skips a perf tracepoint program whenever
 * its CPU is already in any tracing program (the RST's softirq interrupting our
 * sys_exit_connect, under load), and such a refusal then counted as other_failed.
 * A raw tracepoint program is skipped only when it would interrupt itself: an RST handled in
 * process context (a socket's backlog, at release_sock) whose mark a softirq's RST interrupts.
 * That refusal's mark was then missing, and if its caller had read sk_err in the microsecond
 * before the close, it counted other_failed (1 in 20000 in CI). So two programs mark, each in a
 * ring of its own (a program never interrupts itself, so its ring is never written by two runs
 * at once): an RST that interrupts one is marked by the other. A ring, not one slot, because the
 * interrupted RST's close comes after the softirq's: the softirq's RSTs must not overwrite it. */
#define NW_RESET_MARKS 8 /* per program and CPU; a power of two */
#define NW_RESET_MARKERS 2
struct nw_reset_marks {
    u64 sk[NW_RESET_MARKS];
    u64 at_ns[NW_RESET_MARKS];
    u32 next;
    u32 pad;
};
BPF_PERCPU_ARRAY(resetting, struct nw_reset_marks, NW_RESET_MARKERS);
/* tcp_reset() closes the socket microseconds after the mark; an older mark is of another socket
 * that happened to live at the same address. */
#define NW_RESET_MARK_NS 1000000

static __always_inline void mark_reset(int marker, u64 sk)
{
    struct nw_reset_marks *m = resetting.lookup(&marker);
    if (!m)
        return;
    u32 i = m->next & (NW_RESET_MARKS - 1);
    m->next = i + 1;
    m->at_ns[i] = bpf_ktime_get_boot_ns();
    m->sk[i] = sk;
}

RAW_TRACEPOINT_PROBE(tcp_receive_reset)
{
    mark_reset(0, ctx->args[0]); /* TP_PROTO(struct sock *sk): the address nw_sockops keys by */
    return 0;
}

/* The second marker: attached to the same tracepoint by netwatchd/kernel/connect_probe.py. */
int nw_reset_mark_second(struct bpf_raw_tracepoint_args *ctx)
{
    mark_reset(1, ctx->args[0]);
    return 0;
}

static __always_inline int reset_here(u64 sk, u64 now)
{
#pragma unroll
    for (int marker = 0; marker < NW_RESET_MARKERS; marker++) {
        int key = marker;
        struct nw_reset_marks *m = resetting.lookup(&key);
        if (!m)
            continue;
#pragma unroll
        for (int i = 0; i < NW_RESET_MARKS; i++)
            if (m->sk[i] == sk && now - m->at_ns[i] < NW_RESET_MARK_NS)
                return 1;
    }
    return 0;
}

/* Ends of handshakes not (yet) followed, by socket: the connect() that began one takes it when it
 * returns, or finds it after it starts following the handshake (see follow_handshake). An end no
 * connect() takes (a kernel socket's, a TCP Fast Open sendto()'s) ages out of the LRU. */
struct nw_end {
    u64 end_ns;
    s32 err;
    u8 outcome;
    u8 pad[3];
};
BPF_TABLE("lru_hash", u64, struct nw_end, ended, NW_ENDED_ENTRIES);

/* The end waiting in `ended` for the handshake that started at syn_ns on this socket; an older
 * end is another socket's that lived at the same address. */
static __always_inline struct nw_end *end_of(u64 sk, u64 syn_ns)
{
    struct nw_end *end = ended.lookup(&sk);
    return end && end->end_ns >= syn_ns ? end : NULL;
}

/* The end and follow_handshake each write one map, then read the other's: at least one must
 * see the other's write. A map update ends with a plain store (the bucket unlock), and x86 lets
 * a later load pass an earlier store, so without a fence both could miss -- the end then went
 * uncounted until its socket's address was reused (counted unknown: twice in about 20 runs of
 * 2 x 20000 refusals steered to another CPU). An atomic add is a LOCK-prefixed instruction in
 * the x86 JIT, a full barrier; a per-CPU slot, so no CPU waits for another. */
BPF_PERCPU_ARRAY(fences, u64, 1);

static __always_inline void full_fence(void)
{
    int zero = 0;
    u64 *f = fences.lookup(&zero);
    if (f)
        __sync_fetch_and_add(f, 1);
}

/* How a handshake that went SYN_SENT (or SYN_RECV) -> `newstate` ended. */
static __always_inline u8 end_outcome(u64 sk, u32 newstate, u64 now, s32 *err)
{
    *err = 0;
    if (newstate == NW_TCP_ESTABLISHED)
        return NW_OUT_SUCCEEDED;
    /* tcp_reset / tcp_write_err set sk_err before the socket goes to CLOSE; a socket the process
     * closed has none (other_failed, "closed before the handshake ended"). */
    *err = sk_error(sk);
    if (!*err && reset_here(sk, now))
        *err = ECONNREFUSED;
    return *err ? outcome_of_errno(*err) : NW_OUT_OTHER_FAILED;
}

/* The end of a handshake, SYN_SENT -> `newstate`, in whatever context TCP ended it: the caller's
 * connect(), a softirq on any CPU, a timer.
 *  - An end inside the connect() that began it, in its own thread (a loopback handshake, or an
 *    answer the caller's context processed), goes into that thread's `pending` slot: an array
 *    cell, no map update. `exiting` tells it apart from an end that comes while
 *    sys_exit_connect already runs (a softirq interrupting it on this CPU).
 *  - A followed handshake (connect() returned while it was pending) is counted here under the
 *    process that began it.
 *  - Any other end is left in `ended`, where its connect() looks when it returns (or after it
 *    starts following the handshake). */
static __always_inline void end_handshake(u64 sk, u32 newstate)
{
    u64 now = bpf_ktime_get_boot_ns();
    s32 err = 0;
#if NW_SOCKOPS_CURRENT_TASK
    u32 tid = (u32)bpf_get_current_pid_tgid();
    u32 slot = tid & (NW_PENDING_SLOTS - 1);
    struct nw_pending *p = pending.lookup(&slot);
    if (p && p->tid == tid && p->sk == sk && !p->exiting) {
        p->end_outcome = end_outcome(sk, newstate, now, &err);
        p->end_err = err;
        p->end_ns = now;
        return;
    }
#endif
    struct nw_handshake *found = handshakes.lookup(&sk);
    u8 outcome = end_outcome(sk, newstate, now, &err);
    if (!found) {
        /* Not followed (yet): an end before connect() returned, or one whose connect() is about
         * to follow it. Leave the end where that connect() looks after it inserts its entry,
         * then look for the entry again: of the two, at least one sees the other's write, and
         * the entry's delete decides. */
        struct nw_end end = {.end_ns = now, .err = err, .outcome = outcome};
        ended.update(&sk, &end);
        full_fence();
        found = handshakes.lookup(&sk);
        if (!found)
            return;
    }
    struct nw_handshake h = *found;
    if (handshakes.delete(&sk) != 0)
        return; /* someone else ended it (user space gave up on it): counted there */
    count_late_end(&h, outcome);
    u64 usec = (now - h.syn_ns) / 1000;
    if (outcome == NW_OUT_SUCCEEDED)
        add_latency(h.comm, h.family, h.port, h.addr, usec);
    if (!NW_RECORD_EVENTS)
        return;
    struct nw_conn_event ev = {};
    struct nw_conn_event *e = &ev;
    e->boot_ns = now;
    e->tgid = h.tgid;
    e->tid = h.tid;
    e->uid = h.uid;
    e->ret = -EINPROGRESS;
    e->family = h.family;
    e->port = h.port;
    e->kind = NW_KIND_HANDSHAKE_END;
    e->transport = NW_TRANSPORT_TCP;
    e->path_len = 0;
    e->outcome = outcome;
    __builtin_memcpy(e->comm, h.comm, NW_COMM_LEN);
    __builtin_memcpy(e->addr, h.addr, 16);
    e->syn_ns = h.syn_ns;
    e->latency_usec = usec;
    e->end_err = err;
    send_record(e);
}

/* TCP's callbacks for every TCP socket of the host's cgroups (attached to the root cgroup). Most
 * are not ours (timeouts, windows, passive opens): one compare each. An active open asks for its
 * state changes, so its handshake's end comes here; the bit is left set afterwards (clearing it
 * could clear another program's request on the same socket), so the socket's later changes cost
 * one compare each too (why not a tracepoint: see the top of this file). */
int nw_sockops(struct bpf_sock_ops *skops)
{
    u32 op = skops->op;
    if (op == NW_SOCK_OPS_TCP_CONNECT_CB) {
        bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | NW_SOCK_OPS_STATE_CB_FLAG);
        return 1;
    }
    if (op != NW_SOCK_OPS_STATE_CB)
        return 1;
    u32 from = skops->args[0], to = skops->args[1];
    /* A simultaneous open (a self-connect, or two peers' SYNs crossing) goes SYN_SENT -> SYN_RECV
     * and ends from SYN_RECV; only connecting sockets ask, so a SYN_RECV here is one of those. */
    if (from == NW_TCP_SYN_SENT && to == NW_TCP_SYN_RECV)
        return 1;
    if (from != NW_TCP_SYN_SENT && from != NW_TCP_SYN_RECV)
        return 1;
    u64 sk = sk_number(skops->sk);
    if (sk)
        end_handshake(sk, to);
    return 1;
}

/* A handshake still pending at return: followed in `handshakes` until it ends.
 *
 * Its end may happen on another CPU between sys_exit_connect's look into `ended` and the insert
 * (RSS/RPS, a fast reply): it found no entry, and left its end in `ended`. So after inserting,
 * `ended` is read again, then the socket's state (no longer SYN_SENT: it ended). Whoever
 * deletes the entry first counts it -- this program, or the end (nw_sockops). An entry still
 * left from a missed end at the same socket address (the socket freed and its memory reused) is
 * counted unknown under its own process, never taken for this one; so is one still pending
 * after 600 s (user space). */
static __always_inline u8 follow_handshake(struct nw_pending *p, struct nw_proc_entry *c, u32 tgid, u32 tid,
                                           s32 *end_err, u64 *end_ns)
{
    struct nw_handshake h = {};
    h.syn_ns = p->syn_ns;
    h.tgid = tgid;
    h.tid = tid;
    h.uid = (u32)bpf_get_current_uid_gid();
    h.gen = c->gen;
    h.family = p->family;
    h.port = p->port;
    __builtin_memcpy(h.comm, c->comm, NW_COMM_LEN);
    __builtin_memcpy(h.addr, p->addr, 16);
    u64 sk = p->sk;
    struct nw_handshake *stale = handshakes.lookup(&sk);
    if (stale) {
        struct nw_handshake old = *stale;
        if (handshakes.delete(&sk) == 0)
            count_late_end(&old, NW_OUT_UNKNOWN);
    }
    if (handshakes.insert(&sk, &h) != 0) {
        count_loss(NW_LOSS_HANDSHAKES);
        return NW_OUT_UNKNOWN;
    }
    full_fence();
    struct nw_end *end = end_of(sk, h.syn_ns);
    if (end) {
        struct nw_end seen = *end;
        if (handshakes.delete(&sk) != 0)
            return NW_OUT_IN_PROGRESS; /* the end found the entry after all and counts it */
        ended.delete(&sk);
        *end_err = seen.err;
        *end_ns = seen.end_ns;
        return seen.outcome;
    }
    u8 state = NW_TCP_SYN_SENT;
    nw_read_kernel(&state, sizeof(state), (void *)(sk + NW_SK_STATE_OFFSET));
    if (state == NW_TCP_SYN_SENT || handshakes.delete(&sk) != 0)
        return NW_OUT_IN_PROGRESS; /* pending, or its end took the entry and counts it */
    if (state == NW_TCP_ESTABLISHED)
        return NW_OUT_SUCCEEDED;
    s32 err = sk_error(sk);
    *end_err = err;
    return err ? outcome_of_errno(err) : NW_OUT_OTHER_FAILED;
}

#ifndef NW_CGROUP_SCOPE
#define NW_CGROUP_SCOPE 0
#endif
#if NW_CGROUP_SCOPE
/* The daemon's cgroup root is a subtree (it runs in a container): the tracepoints see the whole
 * machine, the cgroup hooks only that subtree, so the counts keep to it too -- one container's
 * connects are its own netwatchd's, not every container's. Never compiled on a host. */
BPF_CGROUP_ARRAY(scope_cgroup, 1);
#endif

TRACEPOINT_PROBE(syscalls, sys_exit_connect)
{
#if NW_CGROUP_SCOPE
    if (scope_cgroup.check_current_task(0) != 1)
        return 0;
#endif
    u64 id = bpf_get_current_pid_tgid();
    u32 tid = (u32)id;
    u32 tgid = id >> 32;
    long ret = args->ret;

    struct nw_proc_entry *c = proc_entry(tgid);
    if (!c)
        return 0; /* counted as untracked; without an entry there is no command for a record */
    u32 slot = tid & (NW_PENDING_SLOTS - 1);
    struct nw_pending *p = pending.lookup(&slot);
    if (!p)
        return 0; /* never: the index is masked into the array */
    /* What this call left in its thread's slot; another thread's slot says nothing of it. */
    int mine = p->tid == tid;
    if (mine) {
        p->exiting = 1; /* an end that interrupts us from here on leaves its end in `ended` */
        asm volatile("" ::: "memory");
    }
    u64 sk = mine ? p->sk : 0;
    u64 syn_ns = sk ? p->syn_ns : 0;

    u8 outcome;
    s32 end_err = 0;
    u64 end_ns = 0;
    u8 ended_outcome = 0; /* NW_OUT_* are never 0 */
    if (sk && p->end_outcome) {
        /* The handshake ended in this thread before we returned: the end is in our slot. */
        ended_outcome = p->end_outcome;
        end_err = p->end_err;
        end_ns = p->end_ns;
    } else if (sk) {
        /* The handshake ended before we returned, elsewhere (on any CPU): it waits in `ended`. */
        struct nw_end *end = end_of(sk, syn_ns);
        if (end) {
            ended_outcome = end->outcome;
            end_err = end->err;
            end_ns = end->end_ns;
            ended.delete(&sk);
        }
    }
    if (ret == -EINPROGRESS) {
        if (ended_outcome) {
            outcome = ended_outcome;
        } else if (sk) {
            outcome = follow_handshake(p, c, tgid, tid, &end_err, &end_ns);
        } else {
            outcome = NW_OUT_UNKNOWN; /* no TCP handshake: SCTP, or the slot was taken */
        }
    } else {
        outcome = outcome_of_errno(-ret);
        end_err = -ret;
    }
    if (outcome != NW_OUT_IN_PROGRESS)
        count_outcome(&c->counts, outcome);

    u32 latency_usec = 0;
    /* a connect that failed before its SYN (no route, no local port) ended no handshake */
    int ended_here = end_ns || outcome == NW_OUT_SUCCEEDED;
    if (syn_ns && outcome != NW_OUT_IN_PROGRESS && outcome != NW_OUT_UNKNOWN && ended_here) {
        latency_usec = ((end_ns ? end_ns : bpf_ktime_get_boot_ns()) - syn_ns) / 1000;
        if (outcome == NW_OUT_SUCCEEDED)
            add_latency(c->comm, p->family, p->port, p->addr, latency_usec);
    }

    if (!NW_RECORD_EVENTS || (mine && p->family)) {
        if (mine)
            p->tid = 0; /* consumed */
        if (!NW_RECORD_EVENTS)
            return 0;
        struct nw_conn_event ev = {};
        struct nw_conn_event *e = &ev;
        fill_common(e, c, tgid, tid, ret);
        e->family = p->family;
        e->port = p->port;
        e->transport = p->transport;
        e->outcome = outcome;
        e->syn_ns = syn_ns;
        e->latency_usec = latency_usec;
        e->end_err = end_err;
        __builtin_memcpy(e->addr, p->addr, 16);
        send_record(e);
        return 0;
    }
    if (mine)
        p->tid = 0;
    struct nw_conn_event_long *l = events_long.ringbuf_reserve(sizeof(struct nw_conn_event_long));
    if (!l) {
        count_loss(NW_LOSS_RING);
        return 0;
    }
    fill_common(&l->ev, c, tgid, tid, ret);
    l->ev.family = 0;
    l->ev.transport = NW_TRANSPORT_UNKNOWN;
    l->ev.outcome = outcome;
    l->ev.end_err = end_err;
    read_user_sockaddr(l);
    events_long.ringbuf_submit(l, BPF_RB_NO_WAKEUP);
    return 0;
}

static __always_inline int record_udp_send(struct bpf_sock_addr *ctx, u16 family)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32;
    struct nw_proc_entry *c = proc_entry(tgid);
    if (!c)
        return 1;
    __sync_fetch_and_add(&c->counts.udp_sends, 1);

    if (!NW_RECORD_EVENTS)
        return 1;
    u8 addr[16] = {};
    if (family == AF_INET) {
        u32 a4 = ctx->user_ip4;
        __builtin_memcpy(addr, &a4, 4);
    } else {
        u32 a6[4];
        a6[0] = ctx->user_ip6[0];
        a6[1] = ctx->user_ip6[1];
        a6[2] = ctx->user_ip6[2];
        a6[3] = ctx->user_ip6[3];
        __builtin_memcpy(addr, a6, 16);
    }
    u16 port = ntohs((u16)ctx->user_port);
    struct nw_conn_event ev = {};
    struct nw_conn_event *e = &ev;
    fill_common(e, c, tgid, (u32)id, 0);
    e->kind = NW_KIND_UDP_SEND;
    e->outcome = NW_OUT_SENT;
    e->family = family;
    e->port = port;
    e->transport = transport_of(ctx->type, ctx->protocol);
    __builtin_memcpy(e->addr, addr, 16);
    send_record(e);
    return 1;
}

int nw_sendmsg4(struct bpf_sock_addr *ctx) { return record_udp_send(ctx, AF_INET); }
int nw_sendmsg6(struct bpf_sock_addr *ctx) { return record_udp_send(ctx, AF_INET6); }
