"""The package's shape, read from its own imports (ast, lazy imports included): the pure engine
imports no edge, the edges read the engines only through the read model, there is no import
cycle, netwatchctl stays a thin client, each edge library is imported only in its homes, and no
source file grows past 500 lines but the few named in LONG_FILES. See README "How it is built"
and DEVELOPERS.md "Layout"."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Dict, Set

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "netwatchd"

ENGINES = ("connects", "devices", "alerting")
EDGE_LIBRARIES = {"bcc", "dbus_fast", "systemd", "sdnotify", "sqlite3", "asyncio", "socketserver", "http", "aiohttp"}
EDGE_PACKAGES = ("netwatchd.kernel", "netwatchd.store", "netwatchd.api", "netwatchd.ctl",
                 "netwatchd.daemon", "netwatchd.device_setup", "netwatchd.notify", "netwatchd.logsetup",
                 "netwatchd.read_model", "netwatchd.daemon_view")  # the last two stand above the engines
# The edges (netwatchd/api/) read the running daemon through the read model they are handed
# (netwatchd/read_model.py), never through the Daemon or its parts: they import no module of the
# engines, of kernel/ or store/, nor the daemon or its read model's implementation (daemon_view).
# The engine types an edge may see are the read model's vocabulary, imported from
# netwatchd.read_model, which imports from the engines these names and nothing else:
API_MUST_NOT_IMPORT = tuple(f"netwatchd.{e}" for e in ENGINES) + (
    "netwatchd.kernel", "netwatchd.store", "netwatchd.daemon", "netwatchd.daemon_view", "netwatchd.device_setup")
READ_MODEL_VOCABULARY = {
    "netwatchd.alerting.alerts": {"KINDS", "Alert"},
    "netwatchd.connects.latency": {"Log2Histogram"},
    "netwatchd.connects.records": {"ConnectionRecord"},
}
# Where each edge library may be imported, and nowhere else.
LIBRARY_HOMES = {
    "bcc": ("netwatchd.kernel.",),
    "dbus_fast": ("netwatchd.api.dbus", "netwatchd.ctl.bus_client"),
    "systemd": ("netwatchd.api.journal", "netwatchd.logsetup"),
    "sdnotify": ("netwatchd.notify",),
    "sqlite3": ("netwatchd.store.",),
    "aiohttp": ("netwatchd.api.",),  # the HTTP listeners (api/http_edge.py) and the web UI (api/web/)
}
# netwatchctl talks to the daemon over the bus: it may import the bus names, netwatchd.text (its
# output is made printable by the same function the daemon escapes with) and itself. The one
# exception is `netwatchctl replay`, which runs the detector offline over the recorded history
# (no daemon involved), so it needs the config, the alerting engine and the history file.
CTL_ALLOWED = ("netwatchd.bus_names", "netwatchd.text", "netwatchd.ctl.")
CTL_REPLAY_ALLOWED = CTL_ALLOWED + ("netwatchd.config", "netwatchd.alerting.", "netwatchd.store.tick_history",
                                   "netwatchd.store.state_files")
# The size rule. A source file is code we write, in any language: Python (the package, the tests
# and their support, the benchmarks, man/generate.py), C (the BPF programs and headers, the
# benchmarks' C) and shell (scripts/, the completion, the kernel matrix's VM runner). Not the
# documentation, configuration, packaging, man pages, unit files or test data.
SOURCES = ("netwatchd/**/*.py", "tests/**/*.py", "bench/*.py", "man/*.py",
           "bpf/*.c", "bpf/*.h", "bench/*.c",
           "scripts/*", "completion/*", "tests/**/*.sh", "netwatchd/**/*.js")
MAX_LINES = 500
# Source files over MAX_LINES today, each with why. The list is exact: a file that grows past the
# limit fails until it is split or named here, and one that shrinks below it must leave the list.
LONG_FILES = {
    "bpf/connect.bpf.c": "one bcc compile unit: the connect path's maps and all the programs that share them",
    "bpf/device.bpf.c": "one bcc compile unit: the TC classifier's maps, parsers and its two programs",
    "tests/unit/test_inventory_store.py": "the inventory file's round trip, schema, migration, damage, "
                                          "SIGKILL and speed cases, sharing one device maker",
    "tests/integration/test_connect_outcomes_exact.py": "every outcome, exact, on one shared set of namespaces",
    "tests/kernels/smoke_connects.py": "the connect part of what runs inside each kernel's VM",
    "tests/system/test_systemd_service.py": "the unit's claims, checked in one booted container",
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> Set[str]:
    """Every module `path` imports, anywhere in it (functions and TYPE_CHECKING blocks too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = module_name(path).split(".")
                base = base[: len(base) - node.level + (1 if path.name == "__init__.py" else 0)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            # `from pkg import module` imports pkg.module
            found.update(f"{mod}.{alias.name}" for alias in node.names)
    return found


def graph() -> Dict[str, Set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    edges = {}
    for name, path in modules.items():
        edges[name] = {m for m in imports_of(path) if m in modules and m != name}
    return edges


def all_imports() -> Dict[str, Set[str]]:
    return {module_name(p): imports_of(p) for p in PACKAGE.rglob("*.py")}


def under(module: str, prefixes) -> bool:
    return any(module == p.rstrip(".") or module.startswith(p if p.endswith(".") else p + ".") for p in prefixes)


def test_the_engines_import_no_edge_and_not_each_other():
    bad = []
    for module, imported in all_imports().items():
        parts = module.split(".")
        if len(parts) < 2 or parts[1] not in ENGINES:
            continue
        others = tuple(f"netwatchd.{e}" for e in ENGINES if e != parts[1])
        for m in imported:
            if m.split(".")[0] in EDGE_LIBRARIES or under(m, EDGE_PACKAGES) or under(m, others):
                bad.append(f"{module} imports {m}")
    assert bad == []


def test_the_edges_import_no_engine_but_through_the_read_model():
    bad = []
    for module, imported in all_imports().items():
        if under(module, ("netwatchd.api",)):
            bad += [f"{module} imports {m}" for m in sorted(imported) if under(m, API_MUST_NOT_IMPORT)]
    assert bad == []


def test_the_read_model_hands_over_only_its_vocabulary():
    from netwatchd import read_model

    path = PACKAGE / "read_model.py"
    from_engines: Dict[str, Set[str]] = {}
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            assert not [a.name for a in node.names if under(a.name, [f"netwatchd.{e}" for e in ENGINES])]
        elif isinstance(node, ast.ImportFrom) and under(node.module or "", [f"netwatchd.{e}" for e in ENGINES]):
            from_engines.setdefault(node.module, set()).update(a.name for a in node.names)
    assert from_engines == READ_MODEL_VOCABULARY
    assert {m: set(names) for m, names in read_model.VOCABULARY.items()} == READ_MODEL_VOCABULARY


def test_each_edge_library_is_imported_only_in_its_home():
    bad = []
    for module, imported in all_imports().items():
        for m in imported:
            homes = LIBRARY_HOMES.get(m.split(".")[0])
            if homes and not any(module == h or module.startswith(h) for h in homes):
                bad.append(f"{module} imports {m}")
    assert bad == []


def test_no_import_cycle_lazy_imports_included():
    edges = graph()
    cycles, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [])
    # a package's __init__ is imported by its modules implicitly, never a cycle in itself
    assert [c for c in cycles if c.count("netwatchd") > 1] == []


def test_netwatchctl_imports_only_bus_names_text_and_itself():
    bad = []
    for module, imported in all_imports().items():
        if not module.startswith("netwatchd.ctl"):
            continue
        allowed = CTL_REPLAY_ALLOWED if module == "netwatchd.ctl.replay" else CTL_ALLOWED
        for m in imported:
            if m.startswith("netwatchd") and m not in ("netwatchd", "netwatchd.ctl") and not under(m, allowed):
                bad.append(f"{module} imports {m}")
    assert bad == []


def test_a_netwatchctl_query_loads_no_daemon_side_library():
    """What `netwatchctl status` loads: not sqlite3, yaml, numpy, bcc or the engines."""
    code = ("import sys, netwatchd.ctl.main; "
            "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('sqlite3', 'yaml', 'numpy', 'bcc', 'systemd') or m.startswith(('netwatchd.alerting', "
            "'netwatchd.connects', 'netwatchd.devices', 'netwatchd.store', 'netwatchd.kernel', 'netwatchd.api')))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == []


def source_files():
    return sorted({p for pattern in SOURCES for p in ROOT.glob(pattern) if p.is_file() and "__pycache__" not in p.parts})


def test_the_size_rule_reads_every_source_file():
    """The globs find the files each folder is known for (a glob that stops matching is a hole)."""
    found = {p.relative_to(ROOT).as_posix() for p in source_files()}
    assert {"netwatchd/daemon.py", "netwatchd/alerting/core.py", "tests/unit/test_architecture.py",
            "tests/integration/test_devices.py", "bench/bench_main.py", "man/generate.py", "bpf/connect.bpf.c",
            "bpf/device.h", "bench/udp_flood.c", "scripts/setup.sh", "scripts/netwatchd-kernel-headers",
            "completion/netwatchctl", "tests/kernels/vmrun.sh"} <= found


def test_no_source_file_over_500_lines_but_the_named_ones():
    lengths = {p.relative_to(ROOT).as_posix(): len(p.read_text(errors="replace").splitlines()) for p in source_files()}
    over = {path: n for path, n in lengths.items() if n > MAX_LINES}
    assert [f"{path}: {n} lines" for path, n in sorted(over.items()) if path not in LONG_FILES] == []
    assert [f"{path}: {lengths.get(path, 'gone')}, no longer over {MAX_LINES}: take it off LONG_FILES"
            for path in sorted(LONG_FILES) if path not in over] == []
