"""The connect path's fallback for kernels before 5.15 (no bpf_get_current_task_btf /
bpf_task_pt_regs), forced on this kernel: the sockaddr is noted at sys_enter_connect instead,
and the known calls -- a unix socket's path included, which only that read sees -- come out
exactly as on the default path. The VM matrix (tests/kernels) runs it on a real 5.10."""
import dataclasses

import pytest

from netwatchd.kernel import features
from tests.conftest import require_root_and_bcc
from tests.integration.test_connect_tracing import EXPECTED_SHAPE, Probe, Servers, run_child
from tests.integration.test_connect_tracing import unique_python  # noqa: F401 (a fixture)

pytestmark = pytest.mark.root


@pytest.fixture
def old_kernel_probe(monkeypatch):
    require_root_and_bcc()
    real = features.current()
    monkeypatch.setattr(features, "_probed", dataclasses.replace(real, task_pt_regs=False))
    p = Probe()
    yield p
    p.close()


def test_sockaddr_read_at_sys_enter_connect_gives_the_same_records(old_kernel_probe, unique_python, tmp_path):
    probe = old_kernel_probe
    assert "sys_enter_connect" in probe.probe.attached_programs()
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
    s = probe.monitor.summary(child["pid"], "", 60)
    connects = [t for t in truth if t["call"] != "udp_send"]
    assert (s["total_attempts"], s["udp_sends"]) == (len(connects), 1), s["message"]
