"""The connect path's fallbacks, forced on this kernel, give the same records:
  - kernels before 5.15 (no bpf_get_current_task_btf / bpf_task_pt_regs): the sockaddr is noted
    at sys_enter_connect instead, and the known calls -- a unix socket's path included, which
    only that read sees -- come out exactly as on the default path;
  - kernels whose sock_ops programs may not call bpf_get_current_pid_tgid: a handshake that ends
    inside its own connect() goes through the `ended` map instead of the thread's slot, with
    the same outcomes and latencies.
The VM matrix (tests/kernels) runs them on the kernels that take them."""
import dataclasses

import pytest

from netwatchd.kernel import features
from tests.conftest import require_root_and_bcc
from tests.integration.test_connect_tracing import EXPECTED_SHAPE, Probe, Servers, run_child
from tests.integration.test_connect_tracing import unique_python  # noqa: F401 (a fixture)

pytestmark = pytest.mark.root


@pytest.fixture(params=["task_pt_regs", "sockops_current_task"])
def old_kernel_probe(monkeypatch, request):
    require_root_and_bcc()
    real = features.current()
    monkeypatch.setattr(features, "_probed", dataclasses.replace(real, **{request.param: False}))
    p = Probe()
    yield request.param, p
    p.close()


def test_a_fallback_gives_the_same_records(old_kernel_probe, unique_python, tmp_path):
    missing, probe = old_kernel_probe
    assert ("sys_enter_connect" in probe.probe.attached_programs()) == (missing == "task_pt_regs")
    name, python = unique_python
    servers = Servers(tmp_path)
    try:
        plan = servers.plan()
        child = run_child(python, plan)
    finally:
        servers.close()
    truth = child["truth"]
    probe.monitor.refresh()  # what the D-Bus edge does before it answers
    records, _ = probe.monitor.list_connections(child["pid"], 0)
    assert len(records) == len(truth)
    for record, call in zip(records, reversed(truth)):
        kind, family, transport, destination, port_key = EXPECTED_SHAPE[call["call"]]
        assert (record["kind"], record["family"], record["transport"]) == (kind, family, transport), call
        assert record["destination"] == (destination if destination else plan["unix"]), call
        assert record["port"] == (plan[port_key] if port_key else 0), call
        assert record["return_code"] == call["return_code"], call
        if record["transport"] == "tcp" and call["return_code"] in (0, -111):  # the handshake's end
            assert record["outcome"] == ("succeeded" if call["return_code"] == 0 else "refused"), (record, call)
            assert record["latency_usec"] > 0 or call["return_code"] != 0, record
    s = probe.monitor.summary(child["pid"], "", 60)
    connects = [t for t in truth if t["call"] != "udp_send"]
    assert (s["total_attempts"], s["udp_sends"]) == (len(connects), 1), s["message"]
