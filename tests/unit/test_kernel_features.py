"""Kernel feature choices and the clsact filter bookkeeping that need no kernel."""
from netwatchd.kernel import features
from netwatchd.kernel.features import KernelFeatures
from netwatchd.kernel.tc_attach import OUR_PROGRAMS, choose_path, program_name


def test_auto_takes_tcx_only_where_the_kernel_has_it():
    assert choose_path("auto", kernel_has_tcx=True) == "tcx"
    assert choose_path("auto", kernel_has_tcx=False) == "clsact"
    assert choose_path("tc", kernel_has_tcx=True) == "clsact"
    assert choose_path("tcx", kernel_has_tcx=False) == "tcx"  # forced: the attach error says why


def test_tcx_is_found_by_its_kernel_symbol(tmp_path):
    kallsyms = tmp_path / "kallsyms"
    kallsyms.write_text("ffffffff81566740 T tcx_prog_attach\nffffffff81566fd0 T tcx_link_attach\n")
    assert features.kernel_has_symbol("tcx_link_attach", str(kallsyms))
    kallsyms.write_text("ffffffff81566fd0 T tcx_link_attach_old\n0000000000000000 t not_tcx_link_attach_x\n")
    assert not features.kernel_has_symbol("tcx_link_attach", str(kallsyms))
    assert not features.kernel_has_symbol("tcx_link_attach", str(tmp_path / "missing"))


def test_tcx_is_found_by_its_btf_type_name(tmp_path):
    btf = tmp_path / "vmlinux"
    btf.write_bytes(b"\x9f\xeb\x01\x00...\0tcx_entry\0tcx_link\0bpf_mprog_entry\0")
    assert features.kernel_has_type("tcx_link", str(btf)) is True
    btf.write_bytes(b"\x9f\xeb\x01\x00...\0tcx_link_ops_x\0bpf_link\0")
    assert features.kernel_has_type("tcx_link", str(btf)) is False
    assert features.kernel_has_type("tcx_link", str(tmp_path / "none")) is None  # no BTF: ask kallsyms


def test_each_fallback_is_named_once_with_its_reason():
    old = KernelFeatures(release="5.10.0-46-amd64", task_pt_regs=False, tcx=False, ringbuf=True, sk_err_offset=-1,
                         sockops_current_task=False)
    assert old.notes() == [
        "connect sockaddr read at sys_enter_connect (no bpf_task_pt_regs before Linux 5.15)",
        "TC classifier on clsact filters (no TCX links before Linux 6.6)",
        "TCP handshake ends handed to connect() through a map (no bpf_get_current_pid_tgid in sock_ops programs)",
        "no kernel BTF: a non-blocking connect that fails after returning is counted as other_failed "
        "(refused and timed out are not told apart)",
    ]
    assert KernelFeatures(release="6.18", task_pt_regs=True, tcx=True, ringbuf=True, sk_err_offset=284).notes() == []


def test_leftovers_are_recognised_by_program_name_not_position():
    # as `tc -j filter show` prints a direct-action filter (iproute2 6.1)
    ours = {"protocol": "all", "pref": 3, "kind": "bpf", "options": {
        "handle": "0x3", "bpf_name": "nw_tc_ingress:[14]", "direct-action": True,
        "prog": {"id": 14, "name": "nw_tc_ingress", "tag": "84e543045b4f76fa", "jited": 1}}}
    theirs = {"protocol": "all", "pref": 20055, "kind": "bpf", "options": {
        "handle": "0x4e57", "prog": {"id": 9, "name": "cilium_ingress"}}}
    classic = {"protocol": "all", "pref": 7, "kind": "bpf", "options": {"handle": "0x7", "bytecode": {}}}
    old_iproute = {"pref": 1, "options": {"handle": "0x1", "bpf_name": "nw_tc_egress:[3]"}}
    assert [program_name(f) in OUR_PROGRAMS for f in (ours, theirs, classic, old_iproute)] == [True, False, False, True]
