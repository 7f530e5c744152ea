/* Yardsticks for netwatchd's connect path, loaded beside it in the same benchmark run.
 *
 *   floor      sys_enter_connect: bumps one per-CPU counter and nothing else. The least any
 *              program on the connect path can cost.
 *   reference  sys_exit_connect: one ring-buffer record per connect, submitted with the default
 *              wakeup, as the usual connect-tracing tools do. A user-space consumer polls it.
 */
BPF_PERCPU_ARRAY(floor_count, u64, 1);

TRACEPOINT_PROBE(syscalls, sys_enter_connect)
{
    u32 zero = 0;
    u64 *v = floor_count.lookup(&zero);
    if (v)
        (*v)++;
    return 0;
}

struct ref_event {
    u64 ts_ns;
    u32 pid;
    u32 tid;
    u32 uid;
    s32 ret;
    char comm[16];
};

BPF_RINGBUF_OUTPUT(ref_events, REF_RING_PAGES);

TRACEPOINT_PROBE(syscalls, sys_exit_connect)
{
    struct ref_event *e = ref_events.ringbuf_reserve(sizeof(struct ref_event));
    if (!e)
        return 0;
    u64 id = bpf_get_current_pid_tgid();
    e->ts_ns = bpf_ktime_get_ns();
    e->pid = id >> 32;
    e->tid = (u32)id;
    e->uid = (u32)bpf_get_current_uid_gid();
    e->ret = args->ret;
    bpf_get_current_comm(&e->comm, sizeof(e->comm));
    ref_events.ringbuf_submit(e, 0); /* default: wake the consumer when it is waiting */
    return 0;
}
