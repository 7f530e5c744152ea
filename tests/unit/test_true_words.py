"""What DEVELOPERS.md's recipes and its "pure" engines say stays true (issue 22, "true words").

The three "where it goes" recipes (a new alert kind, a new D-Bus method, a new kernel fallback):
- each names the files it sends you to, and they exist (the names in the whole of DEVELOPERS.md
  are checked by tests/unit/test_doc_names.py; here: each recipe still names the files and
  registries below, and every code name a step quotes is in the files that step names);
- the registries they name list every kind, member and fallback:
  - alert kinds: every kind of `KINDS` is raised by a module of netwatchd/alerting/ and listed in
    the D-Bus man page's ListAlerts; its README row (MESSAGE_ID, priority) is checked by
    tests/unit/test_journal_sink.py, its catalog entry by tests/unit/test_journal_catalog.py;
  - D-Bus: every method, signal and property the service exports is in README's "D-Bus API"
    (methods with their arguments and answer types); the man page's entries are checked by the
    generator itself (tests/unit/test_man_pages.py), the read model's by tests/unit/test_read_model.py;
  - kernel fallbacks: every line `KernelFeatures.notes()` can say is in README's "Kernels", word
    for word, and every `-D` flag the probes pass is read by their BPF C.

"Pure": the engines' reads of the system are exactly the ones DEVELOPERS.md lists.
"""
from __future__ import annotations

import ast
import importlib.util
import re
import sys
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pytest

from netwatchd.alerting.alerts import KINDS
from netwatchd.kernel.features import KernelFeatures
from tests.unit.test_doc_names import ROOT, Text, wrong_names

DEVELOPERS = ROOT / "DEVELOPERS.md"
README = ROOT / "README.md"
ENGINES = ("connects", "devices", "alerting")


def section(path: Path, heading: str) -> str:
    """The text under a Markdown heading, up to the next heading of the same or a higher level."""
    text = path.read_text()
    level = heading.split(" ", 1)[0]
    body = text.index(heading + "\n") + len(heading) + 1
    end = re.search(r"^#{1,%d} " % len(level), text[body:], re.M)
    return text[body:body + end.start()] if end else text[body:]


# ----------------------------------------------------------------------------- the recipes
RECIPES = {
    "## A new alert kind: where it goes": {
        "netwatchd/alerting/alerts.py", "netwatchd/alerting/detector.py", "netwatchd/alerting/core.py",
        "README.md", "systemd/netwatchd.catalog", "man/org.netwatchd.Netwatchd1.5.in",
        "tests/unit/test_journal_sink.py", "tests/unit/test_journal_catalog.py", "tests/unit/test_true_words.py"},
    "## A new D-Bus method: where it goes": {
        "netwatchd/read_model.py", "netwatchd/daemon_view.py", "netwatchd/api/dbus.py",
        "man/org.netwatchd.Netwatchd1.5.in", "README.md", "tests/unit/test_read_model.py"},
    "## A new kernel fallback: where it goes": {
        "netwatchd/kernel/features.py", "netwatchd/kernel/connect_probe.py", "bpf/connect.bpf.c", "README.md",
        "tests/unit/test_kernel_features.py", "tests/unit/test_true_words.py"},
}
# what stands for the new thing in a recipe, not a name of ours
PLACEHOLDERS = {"GetThing", "port_sweep"}
FILE_RE = re.compile(r"`((?:[\w.-]+/)*[\w.-]+\.(?:py|c|h|md|in|catalog|yaml|5))`")


def steps(recipe: str) -> List[str]:
    """The numbered steps of a recipe, each with its continuation lines."""
    return [m.group(0) for m in re.finditer(r"^\d+\. .*(?:\n(?!\d+\. |\n).*)*", recipe, re.M)]


@pytest.mark.parametrize("heading", sorted(RECIPES))
def test_each_recipe_names_its_files_and_they_exist(heading):
    recipe = section(DEVELOPERS, heading)
    named = {m.group(1) for m in FILE_RE.finditer(recipe)}
    assert RECIPES[heading] <= named, f"{heading} no longer names {sorted(RECIPES[heading] - named)}"
    assert [name for _, name in wrong_names(Text(DEVELOPERS, 1, recipe, ("", "", "netwatchd")))] == []
    assert len(steps(recipe)) >= 4


@pytest.mark.parametrize("heading", sorted(RECIPES))
def test_each_name_a_recipe_quotes_is_in_the_files_it_names(heading):
    """`FIELD_SIGNATURES`, `_raise`, `cflags_for`: in the files the recipe names, so a rename that
    leaves a recipe behind fails here."""
    recipe = section(DEVELOPERS, heading)
    files = {m.group(1) for m in FILE_RE.finditer(recipe)}
    text = "\n".join((ROOT / f).read_text() for f in sorted(files) if (ROOT / f).is_file())
    missing = []
    for step in steps(recipe):
        for quoted in re.findall(r"`([^`\s]+)`", step):
            if "/" in quoted or FILE_RE.fullmatch(f"`{quoted}`"):
                continue  # a path: tests/unit/test_doc_names.py checks those
            for name in re.findall(r"[A-Za-z_]\w*", quoted):
                if name not in PLACEHOLDERS and not re.search(rf"\b{re.escape(name)}\b", text):
                    missing.append(f"{step.split('.')[0]}: {name}")
    assert missing == []


# -- alert kinds
def raised_kinds() -> Dict[str, Set[str]]:
    """{kind: modules} for every literal kind an `Alert(...)` or `self._raise(...)` in
    netwatchd/alerting/ is given (the kind is the second argument of both)."""
    found: Dict[str, Set[str]] = {}
    for path in sorted((ROOT / "netwatchd" / "alerting").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call) or len(node.args) < 2:
                continue
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            kind = node.args[1]
            if name in ("Alert", "_raise") and isinstance(kind, ast.Constant) and isinstance(kind.value, str):
                found.setdefault(kind.value, set()).add(path.name)
    return found


def test_every_kind_is_raised_by_the_alerting_engine_and_nothing_else_is():
    assert sorted(raised_kinds()) == sorted(KINDS)


def test_the_dbus_man_page_lists_every_kind():
    template = (ROOT / "man" / "org.netwatchd.Netwatchd1.5.in").read_text()
    list_alerts = template[template.index("@method ListAlerts\n"):].split("\n@", 1)[0]
    listed = re.search(r"^\.B kind\n\(([^)]*)\)", list_alerts, re.M).group(1)
    assert sorted(k.strip() for k in listed.split(",")) == sorted(KINDS)


# -- D-Bus
def introspected() -> List:
    """The service's members as man/generate.py reads them (dbus-fast's own introspection)."""
    spec = importlib.util.spec_from_file_location("man_generate", ROOT / "man" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module.introspected_members()


def readme_methods(dbus_api: str) -> Dict[str, Tuple[List[str], List[str]]]:
    """{method: (its arguments as "type name", its answer's types)} from README's method table."""
    out = {}
    for m in re.finditer(r"^\| `(\w+)\(([^)]*)\) → ([^`]*)` \|", dbus_api, re.M):
        args = [a.strip() for a in m.group(2).split(",") if a.strip()]
        out[m.group(1)] = (args, [a.split()[0] for a in m.group(3).split(",")])
    return out


def test_the_readme_documents_every_member_the_service_exports():
    dbus_api = section(README, "### D-Bus API")
    members = introspected()
    methods = {m.name: ([f"{t} {n}" for d, t, n in m.args if d == "in"], [t for d, t, _ in m.args if d == "out"])
               for m in members if m.kind == "method"}
    assert readme_methods(dbus_api) == methods
    signals = {m.name: ", ".join(f"{t} {n}" for _, t, n in m.args) for m in members if m.kind == "signal"}
    assert dict(re.findall(r"Signal `(\w+)\(([^)]*)\)`", dbus_api)) == signals
    properties = dbus_api[dbus_api.index("Properties:"):]
    assert sorted(m.name for m in members if m.kind == "property" and f"`{m.name}`" not in properties) == []


# -- kernel fallbacks
def notes_lines() -> List[str]:
    """Every line KernelFeatures.notes() can say, read from its source (each `out.append`)."""
    tree = ast.parse((ROOT / "netwatchd" / "kernel" / "features.py").read_text())
    (cls,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "KernelFeatures"]
    (notes,) = [n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "notes"]
    return [call.args[0].value for call in ast.walk(notes) if isinstance(call, ast.Call)
            and isinstance(call.func, ast.Attribute) and call.func.attr == "append"
            and isinstance(call.args[0], ast.Constant)]


def test_notes_are_read_whole_from_the_source():
    """The oldest kernel we could meet takes every fallback: its notes are all the lines."""
    oldest = KernelFeatures(release="5.10", task_pt_regs=False, tcx=False, ringbuf=True, sk_err_offset=-1,
                            sockops_current_task=False)
    assert oldest.notes() == notes_lines() and len(notes_lines()) >= 3


def test_the_readme_kernels_section_names_every_fallback_word_for_word():
    kernels = section(README, "## Kernels")
    assert [line for line in notes_lines() if f"`{line}`" not in kernels] == []


@pytest.mark.parametrize("probe, sources", [
    ("netwatchd/kernel/connect_probe.py", ("bpf/connect.bpf.c", "bpf/connect.h")),
    ("netwatchd/kernel/device_probe.py", ("bpf/device.bpf.c", "bpf/device.h")),
])
def test_every_d_flag_a_probe_passes_is_read_by_its_bpf_c(probe, sources):
    flags = set(re.findall(r"-D(NW_\w+)=", (ROOT / probe).read_text()))
    c = "\n".join((ROOT / s).read_text() for s in sources)
    # a default for a compile without the flag (#ifndef NW_X / #define NW_X ...) is not a use
    uses = re.sub(r"^\s*#\s*(?:ifndef|define)\s+NW_\w+\b.*$", "", c, flags=re.M)
    assert len(flags) >= 5
    assert sorted(f for f in flags if not re.search(rf"\b{f}\b", uses)) == []


# ----------------------------------------------------------------------------- "pure" engines
# The engines' reads of the system, as DEVELOPERS.md ("Layout") lists them: (module, function)
# -> what it calls. Everything else an engine learns comes through what it is handed.
SYSTEM_READS = {
    ("netwatchd/connects/monitor.py", "process_gone"): {"os.path.exists"},
    ("netwatchd/devices/records.py", "interface_name"): {"socket.if_indextoname"},
    ("netwatchd/devices/vendors.py", "VendorDb.load"): {"os.path.isdir", "open"},
    ("netwatchd/alerting/seasonality.py", "local_offset_sec"): {"time.localtime"},
}
# The callables engines take by default (their parameters' defaults) that read the system.
DEFAULT_READERS = {"time.time", "process_gone", "read_interfaces", "interface_name", "local_offset_sec"}
SYSTEM_MODULES = ("os", "io", "socket", "time", "subprocess", "shutil", "glob", "pathlib", "select", "fcntl",
                  "signal", "ctypes.CDLL", "urllib", "http")
PURE_CALLS = {"os.path.join", "os.path.basename", "os.path.dirname", "os.path.splitext", "os.fspath",
              "socket.inet_ntop", "socket.inet_pton", "socket.htons", "socket.ntohs", "socket.htonl", "socket.ntohl"}
FILE_METHODS = {"read_text", "read_bytes", "write_text", "write_bytes", "iterdir", "exists", "is_dir", "is_file",
                "readlink", "mkdir", "unlink"}


def dotted(node: ast.AST) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    parts.append(node.id if isinstance(node, ast.Name) else "?")
    return ".".join(reversed(parts))


def engine_modules():
    for engine in ENGINES:
        for path in sorted((ROOT / "netwatchd" / engine).rglob("*.py")):
            yield path.relative_to(ROOT).as_posix(), ast.parse(path.read_text())


def reads_of(tree: ast.AST) -> Dict[str, Set[str]]:
    """{function (Class.method for methods): the system calls in it}."""
    out: Dict[str, Set[str]] = {}

    def visit(node: ast.AST, scope: str) -> None:
        for child in ast.iter_child_nodes(node):
            inner = scope
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                inner = f"{scope}.{child.name}".lstrip(".")
            if isinstance(child, ast.Call):
                name = dotted(child.func)
                system = (name == "open" or name.startswith(tuple(m + "." for m in SYSTEM_MODULES))
                          or name.rsplit(".", 1)[-1] in FILE_METHODS)
                if system and name not in PURE_CALLS:
                    out.setdefault(scope, set()).add(name)
            visit(child, inner)
    visit(tree, "")
    return out


def test_the_engines_read_the_system_only_where_developers_md_says():
    found = {(module, function): calls for module, tree in engine_modules() for function, calls in reads_of(tree).items()}
    assert found == SYSTEM_READS


def test_the_engines_default_readers_are_the_listed_ones():
    defaults = set()
    for _, tree in engine_modules():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for d in node.args.defaults + [d for d in node.args.kw_defaults if d is not None]:
                    if isinstance(d, (ast.Name, ast.Attribute)) and not dotted(d).split(".")[-1].isupper():
                        defaults.add(dotted(d))
    assert defaults == DEFAULT_READERS


def test_developers_md_lists_each_read():
    layout = section(DEVELOPERS, "## Layout")
    listed = {f"{module.removeprefix('netwatchd/')}: `{function}`" for module, function in SYSTEM_READS}
    assert [item for item in sorted(listed) if item not in layout] == []
    assert [name for name in sorted(DEFAULT_READERS) if f"`{name}`" not in layout] == []
