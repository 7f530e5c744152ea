"""What the daemon checks before bcc (netwatchd/kernel/headers.py): tracefs, and whether its
tracepoints can be opened, each missing piece one named error. The daemon mounts nothing itself
(issue 21: no mount(2) in its sandbox)."""
import errno

import pytest

from netwatchd.kernel.headers import KernelEnvError, check_tracepoint_access, ensure_tracefs


def tracefs(root, with_tracepoint=True):
    d = root / "tracing"
    (d / "events").mkdir(parents=True)
    if with_tracepoint:
        (d / "events" / "syscalls" / "sys_exit_connect").mkdir(parents=True)
        (d / "events" / "syscalls" / "sys_exit_connect" / "id").write_text("1234\n")
    return d


def test_no_tracefs_is_a_named_error_and_nothing_is_mounted(tmp_path):
    dirs = (str(tmp_path / "debug" / "tracing"), str(tmp_path / "tracing"))
    with pytest.raises(KernelEnvError) as e:
        ensure_tracefs(dirs)
    assert str(e.value) == (
        f"tracefs is not mounted (no events/ in {dirs[0]} or {dirs[1]}): bcc attaches the connect tracepoints "
        f"through it. netwatchd-kernel-headers mounts it (the unit runs it before start), or: "
        f"mount -t tracefs tracefs {dirs[1]}")
    assert not (tmp_path / "tracing").exists()


def test_the_first_tracefs_with_events_is_used(tmp_path):
    d = tracefs(tmp_path)
    seen = []
    check_tracepoint_access(str(d), open_event=lambda p: seen.append(p) or 0, paranoid=lambda: 3)
    assert seen == [str(d / "events" / "syscalls" / "sys_exit_connect" / "id")]


def test_a_refused_perf_event_names_debians_perf_event_paranoid_and_the_capability(tmp_path):
    d = tracefs(tmp_path)
    with pytest.raises(KernelEnvError) as e:
        check_tracepoint_access(str(d), open_event=lambda p: errno.EACCES, paranoid=lambda: 3)
    assert str(e.value) == (
        "cannot open a perf event for tracepoint syscalls:sys_exit_connect: EACCES; kernel.perf_event_paranoid "
        "is 3: Debian's kernels then open perf events only for CAP_SYS_ADMIN. Keep CAP_SYS_ADMIN in "
        "netwatchd.service's CapabilityBoundingSet= (README, \"Kernels\")")
    with pytest.raises(KernelEnvError) as e:
        check_tracepoint_access(str(d), open_event=lambda p: errno.EPERM, paranoid=lambda: 2)
    assert str(e.value) == (
        "cannot open a perf event for tracepoint syscalls:sys_exit_connect: EPERM; netwatchd needs CAP_PERFMON "
        "and CAP_BPF (and CAP_SYS_ADMIN where kernel.perf_event_paranoid > 2)")


def test_other_errors_are_left_to_bcc_and_a_missing_tracepoint_is_named(tmp_path):
    check_tracepoint_access(str(tracefs(tmp_path)), open_event=lambda p: errno.ENODEV, paranoid=lambda: 3)
    d = tracefs(tmp_path / "bare", with_tracepoint=False)
    with pytest.raises(KernelEnvError, match=r"has no tracepoint syscalls:sys_exit_connect \(a kernel built "
                                             r"without CONFIG_FTRACE_SYSCALLS\)"):
        check_tracepoint_access(str(d), open_event=lambda p: 0, paranoid=lambda: 3)
