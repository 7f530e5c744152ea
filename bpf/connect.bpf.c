/* netwatchd connect path: counts every connect() per process in the kernel and sends one record
 * per call through a ring buffer without waking user space.
 *
 *   cgroup connect4/6   notes the destination and the transport read from the socket
 *   sys_exit_connect    counts the outcome per process and emits the record; for what the
 *                       cgroup hook never sees (unix sockets, early failures) it reads the
 *                       caller's sockaddr itself
 *   cgroup sendmsg4/6   counts and records unconnected UDP sends
 *   sched_process_exec  moves a process's counters under its old command name (rare)
 *
 * Settings arrive as -D cflags from netwatchd/kernel/connect_probe.py:
 *   NW_MAX_PROCS, NW_PENDING_SLOTS (power of two), NW_RING_PAGES, NW_RECORD_EVENTS (0: counts
 *   only, no per-connect records). The sendmsg hooks are attached only when UDP sends are traced.
 *   NW_SOCKADDR_AT_ENTER (chosen by netwatchd/kernel/features.py): 0 = read the caller's sockaddr
 *   through bpf_task_pt_regs when needed (Linux >= 5.15); 1 = a sys_enter_connect tracepoint
 *   notes the address argument of every connect() (any kernel; one more program run per call).
 * Only tracepoints, cgroup hooks, helpers and uapi types: it loads whatever the kernel headers. */
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

BPF_HASH(proc_counts, u32, struct nw_proc_entry, NW_MAX_PROCS);
BPF_HASH(retired_counts, struct nw_retired_key, struct nw_proc_entry, NW_MAX_PROCS);
BPF_ARRAY(pending, struct nw_pending, NW_PENDING_SLOTS);
BPF_RINGBUF_OUTPUT(events, NW_RING_PAGES);
/* [0] records that found the ring full, [1] processes that found proc_counts full. */
BPF_PERCPU_ARRAY(losses, u64, 2);

static __always_inline void count_loss(int which)
{
    u64 *v = losses.lookup(&which);
    if (v)
        (*v)++;
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
        count_loss(1);
    return c;
}

/* Copies an entry to retired_counts and restarts it at zero under the next generation. Called
 * only when nothing else can be counting into it: at exec every other thread of the process is
 * gone, and at fork the pid's previous owner is dead and reaped. */
static __always_inline void retire(u32 tgid, struct nw_proc_entry *c)
{
    struct nw_retired_key key = {.tgid = tgid, .gen = c->gen};
    if (retired_counts.update(&key, c) != 0) {
        count_loss(1);
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
    bpf_probe_read_kernel(uaddr, sizeof(*uaddr), &PT_REGS_PARM2(regs));
    bpf_probe_read_kernel(ulen, sizeof(*ulen), &PT_REGS_PARM3(regs));
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
    __builtin_memcpy(e->comm, c->comm, NW_COMM_LEN);
}

TRACEPOINT_PROBE(syscalls, sys_exit_connect)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 tid = (u32)id;
    u32 tgid = id >> 32;
    long ret = args->ret;

    struct nw_proc_entry *c = proc_entry(tgid);
    if (!c)
        return 0; /* counted as untracked; without an entry there is no command for a record */
    if (ret == 0)
        __sync_fetch_and_add(&c->counts.succeeded, 1);
    else if (ret == -EINPROGRESS)
        __sync_fetch_and_add(&c->counts.in_progress, 1);
    else
        __sync_fetch_and_add(&c->counts.failed, 1);

    if (!NW_RECORD_EVENTS)
        return 0;
    u32 slot = tid & (NW_PENDING_SLOTS - 1);
    struct nw_pending *p = pending.lookup(&slot);
    if (p && p->tid == tid) {
        struct nw_conn_event *e = events.ringbuf_reserve(sizeof(struct nw_conn_event));
        if (!e) {
            count_loss(0);
            return 0;
        }
        fill_common(e, c, tgid, tid, ret);
        e->family = p->family;
        e->port = p->port;
        e->transport = p->transport;
        __builtin_memcpy(e->addr, p->addr, 16);
        p->tid = 0; /* consumed */
        events.ringbuf_submit(e, BPF_RB_NO_WAKEUP);
        return 0;
    }
    struct nw_conn_event_long *l = events.ringbuf_reserve(sizeof(struct nw_conn_event_long));
    if (!l) {
        count_loss(0);
        return 0;
    }
    fill_common(&l->ev, c, tgid, tid, ret);
    l->ev.family = 0;
    l->ev.transport = NW_TRANSPORT_UNKNOWN;
    read_user_sockaddr(l);
    events.ringbuf_submit(l, BPF_RB_NO_WAKEUP);
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
    struct nw_conn_event *e = events.ringbuf_reserve(sizeof(struct nw_conn_event));
    if (!e) {
        count_loss(0);
        return 1;
    }
    fill_common(e, c, tgid, (u32)id, 0);
    e->kind = NW_KIND_UDP_SEND;
    e->family = family;
    e->port = ntohs((u16)ctx->user_port);
    e->transport = transport_of(ctx->type, ctx->protocol);
    if (family == AF_INET) {
        u32 a4 = ctx->user_ip4;
        __builtin_memcpy(e->addr, &a4, 4);
    } else {
        u32 a6[4];
        a6[0] = ctx->user_ip6[0];
        a6[1] = ctx->user_ip6[1];
        a6[2] = ctx->user_ip6[2];
        a6[3] = ctx->user_ip6[3];
        __builtin_memcpy(e->addr, a6, 16);
    }
    events.ringbuf_submit(e, BPF_RB_NO_WAKEUP);
    return 1;
}

int nw_sendmsg4(struct bpf_sock_addr *ctx) { return record_udp_send(ctx, AF_INET); }
int nw_sendmsg6(struct bpf_sock_addr *ctx) { return record_udp_send(ctx, AF_INET6); }
