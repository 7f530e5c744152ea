"""Every file, folder and module the words name exists (issue 22, "true words").

Read: README.md, DEVELOPERS.md and tests/README.md whole; the comments and docstrings of every
module of netwatchd/, tests/, bench/ and man/; the comments of bpf/*.c and bpf/*.h; the `#`
comments of scripts/, systemd/, config/, debian/, completion/, the Makefile and
tests/kernels/vmrun.sh; the man pages written by hand and the templates of the generated ones.

Recognised there (a name is judged only by whether it is there, never by what it says):
- **paths with a slash** whose first part is a folder of this repository (`netwatchd/...`,
  `bpf/...`, `tests/...`, `bench/...`, `scripts/...`, `systemd/...`, `man/...`, `config/...`,
  `debian/...`, `completion/...`, and the folders inside them: `api/dbus.py`, `devices/`,
  `tests/unit/`); a glob (`tests/**/*.py`) must match something. A path is looked up relative
  to the folder of the file that names it, to the repository's root and to `netwatchd/` (the
  package's folders name each other without it, `alerting/core.py`); a module may be named
  without its `.py` (`api/dbus`).
- **file names without a slash** ending in `.py`, `.c` or `.h` (`pipeline.py`, `connect.h`): in
  the naming file's folder, else anywhere in the repository.
- **dotted names** starting with `netwatchd.`, `tests.` or `bench.`: a module or package
  (`netwatchd.devices.queries`; pyproject's package-dir maps `netwatchd.bpf` to bpf/), then a name
  it defines and a member of that (`netwatchd.devices.records.DeviceLosses`,
  `tests.conftest.requires`), read from the source (ast), not imported; or else a file of the
  repository by that name (`netwatchd.service`, `netwatchd.yaml.5`).
- **a module by its last name and a member** (`bpf_util.QUIET_KERNEL_HEADER_WARNINGS`,
  `http_guard.ConnectionCap`): a module of ours of that name that defines the member, a module
  that imports (`typing.Protocol`, `json.Decoder`), or a name the naming module binds itself (an
  import alias: `dbus_service.export`).
- **DEVELOPERS.md's layout block** (the tree under "Layout"): a name listed under a folder
  heading (`  kernel/` then `    links.py`), or in a folder's own description (`store/  ...
  sqlite.py, inventory.py`), is in that folder (with a slash: under it or the root); every word
  there ending in a source file's extension is checked (.py .c .h .sh .in .md .yaml .xml .conf
  .service .catalog, man sections), not only the ones above.

Not recognised, so never checked: absolute paths (`/etc/netwatchd/netwatchd.yaml`,
`/usr/share/ieee-data`, `/sys/class/net`: the system's, not ours), `~` and `$VAR` paths, URLs,
`<placeholders>`, files a run creates (`inventory.sqlite3`, `baselines.npz`: not a source
extension; anything under RUN_TIME's folders), and slashes between words (`run/test`,
`journald/stderr`: the first part is no folder of ours). The few names that look like ours but
are not are in EXEMPT, each with its reason; an exemption no text names any more fails.
"""
from __future__ import annotations

import ast
import importlib.util
import io
import re
import tokenize
from functools import lru_cache
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Set, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[2]
# what a checkout holds besides the sources: never looked in
NOT_SOURCES = {".git", ".venv", "build", "dist", ".pytest_cache", ".hypothesis", "__pycache__"}

# Names that look like the repository's and are not, each with why.
EXEMPT: Dict[str, str] = {
    "kernel/bpf/tcx.c": "Linux's source tree (netwatchd/kernel/features.py says where TCX comes from)",
    "sysexits.h": "the C library's exit codes (netwatchctl replay's exit codes follow them)",
    "libbpf.h": "libbpf's header (the ctypes mirrors in netwatchd/kernel/tc_attach.py)",
    "capability.h": "Linux's uapi header (capability numbers in tests/system)",
    "strconv.Atoi": "Go's (ebpf-server's number parsing, which netwatchd/api/ebpf_server.py follows)",
    "fixtures/app/NAME.hex": "a placeholder for each fixture's name",
}

DOTTED_PREFIXES = ("netwatchd", "tests", "bench")
PYTHON_FOLDERS = ("netwatchd", "tests", "bench", "man")  # whose modules' comments and docstrings are read
HASH_COMMENT_FOLDERS = ("scripts", "systemd", "config", "debian", "completion")  # whose `#` comments are read
# a word that names a file in the layout block: these extensions (state files' .sqlite3, .npz,
# .json are made at run time and not listed here)
LAYOUT_FILE_RE = re.compile(r"(?<![\w./~$-])([A-Za-z_][\w.-]*\.(?:py|c|h|sh|in|md|yaml|xml|conf|service|catalog|[158]))\b(?![\w/-])")
SLASHED_RE = re.compile(r"(?<![\w./~$@:<>-])([A-Za-z_][\w.-]*/(?:[\w.*-]+/?)*)")
BARE_RE = re.compile(r"(?<![\w./~$@:<>-])([A-Za-z_][\w-]*(?:\.[\w-]+)*\.(?:py|c|h))(?![\w/(-])")
DOTTED_RE = re.compile(r"(?<![\w./~$@:<>-])((?:%s)(?:\.\w+)+)(?![\w/-])" % "|".join(DOTTED_PREFIXES))
# `bpf_util.QUIET_KERNEL_HEADER_WARNINGS`, `http_guard.ConnectionCap`: a module by its last name
MEMBER_RE = re.compile(r"(?<![\w./~$@:<>-])([a-z_][a-z0-9_]*)\.([A-Z]\w*)")
# folders a run makes (gitignored): what is named under them is made, not kept
RUN_TIME = ("bench/results/",)


# ----------------------------------------------------------------------------- the repository
@lru_cache(maxsize=None)
def repo_paths() -> Tuple[Set[str], Set[str]]:
    """(every file, every folder) of the repository, relative to its root, as posix strings."""
    files, folders = set(), set()

    def walk(folder: Path) -> None:
        for entry in folder.iterdir():
            if entry.name in NOT_SOURCES or entry.name.endswith(".egg-info"):
                continue
            rel = entry.relative_to(ROOT).as_posix()
            if (rel + "/").startswith(RUN_TIME):
                continue
            if entry.is_dir():
                folders.add(rel)
                walk(entry)
            else:
                files.add(rel)
    walk(ROOT)
    return files, folders


@lru_cache(maxsize=None)
def folder_names() -> Set[str]:
    return {f.rsplit("/", 1)[-1] for f in repo_paths()[1]}


@lru_cache(maxsize=None)
def base_names() -> Set[str]:
    return {f.rsplit("/", 1)[-1] for f in repo_paths()[0]}


def exists(rel: str) -> bool:
    rel = rel.rstrip("/")
    files, folders = repo_paths()
    return rel in files or rel in folders or rel == ""


# ----------------------------------------------------------------------------- the texts
class Text:
    """Words of one file from `line` on, and the folders its names are relative to."""

    def __init__(self, source: Path, line: int, text: str, bases: Tuple[str, ...], layout: bool = False,
                 bound: frozenset = frozenset()):
        self.source, self.line, self.text, self.bases, self.layout = source, line, text, bases, layout
        self.bound = bound  # names the naming module binds itself (an import alias, a variable)

    def where(self, offset: int) -> str:
        return f"{self.source.relative_to(ROOT)}:{self.line + self.text.count(chr(10), 0, offset)}"


def folder_of(path: Path) -> str:
    rel = path.parent.relative_to(ROOT).as_posix()
    return "" if rel == "." else rel


def python_words(path: Path) -> Iterator[Text]:
    """Comments and docstrings of a module."""
    source = path.read_text()
    bases = (folder_of(path), "", "netwatchd")
    tree = ast.parse(source)
    bound = frozenset(n for node in ast.walk(tree) for n in _binds(node))
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            yield Text(path, tok.start[0], tok.string, bases, bound=bound)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                yield Text(path, body[0].lineno, body[0].value.value, bases, bound=bound)


def _binds(node: ast.AST) -> Iterator[str]:
    if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
        yield node.id
    elif isinstance(node, ast.arg):
        yield node.arg
    elif isinstance(node, (ast.Import, ast.ImportFrom)):
        yield from ((a.asname or a.name).split(".")[0] for a in node.names)
    elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        yield node.name


def c_words(path: Path) -> Iterator[Text]:
    """Comments of a C source or header (/* */ and //)."""
    source = path.read_text()
    bases = (folder_of(path), "", "netwatchd")
    for m in re.finditer(r"/\*.*?\*/|//[^\n]*", source, re.S):
        yield Text(path, source.count("\n", 0, m.start()) + 1, m.group(0), bases)


def layout_lines(path: Path, lines: List[str], start: int) -> Iterator[Text]:
    """The layout tree: each line's names are in the folder its indentation puts it under."""
    stack: List[Tuple[int, str]] = []  # (indentation, folder)
    for number, line in enumerate(lines[start:], start + 1):
        if line.startswith("```"):
            return
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        while stack and stack[-1][0] >= indent:
            stack.pop()
        parent = stack[-1][1] if stack else ""
        first = line.split()[0] if line.strip() else ""
        if re.fullmatch(r"[\w.-]+/", first):  # a folder heading: it is in its parent, the rest in it
            context = f"{parent}/{first[:-1]}".lstrip("/")
            stack.append((indent, context))
            yield Text(path, number, line[:indent + len(first)], (parent, ""), layout=True)
            yield Text(path, number, " " * (indent + len(first)) + line[indent + len(first):], (context, ""),
                       layout=True)
        else:
            yield Text(path, number, line, (parent, ""), layout=True)


def markdown_words(path: Path) -> Iterator[Text]:
    lines = path.read_text().splitlines()
    layout_at = None
    for i, line in enumerate(lines):
        if line.startswith("```") and i + 1 < len(lines) and lines[i + 1] == "netwatchd/":
            layout_at = i + 1
    end = None
    if layout_at is not None:
        end = next(i for i in range(layout_at, len(lines)) if lines[i].startswith("```"))
        yield from layout_lines(path, lines, layout_at)
    bases = (folder_of(path), "", "netwatchd")
    for number, line in enumerate(lines, 1):
        if layout_at is not None and layout_at < number <= end:
            continue
        yield Text(path, number, line, bases)


def hash_comments(path: Path) -> Iterator[Text]:
    """`#` comments of a script, unit, config or Makefile."""
    bases = (folder_of(path), "", "netwatchd")
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        m = re.search(r"(?:^|\s)#(.*)", line)
        if m:
            yield Text(path, number, m.group(1), bases)


def texts() -> Iterator[Text]:
    for doc in ("README.md", "DEVELOPERS.md", "tests/README.md"):
        yield from markdown_words(ROOT / doc)
    for rel in sorted(repo_paths()[0]):
        folder = rel.split("/")[0]
        if rel.endswith(".py") and folder in PYTHON_FOLDERS:
            yield from python_words(ROOT / rel)
        elif folder in HASH_COMMENT_FOLDERS or rel in ("Makefile", "tests/kernels/vmrun.sh"):
            yield from hash_comments(ROOT / rel)
        elif folder == "man" and not (ROOT / (rel + ".in")).exists():  # a template, or a page written by hand
            yield Text(ROOT / rel, 1, (ROOT / rel).read_text(), ("man", "", "netwatchd"))
    for path in sorted((ROOT / "bpf").glob("*.[ch]")):
        yield from c_words(path)


# ----------------------------------------------------------------------------- the checks
def path_is_there(name: str, bases: Tuple[str, ...]) -> bool:
    for base in bases:
        rel = f"{base}/{name}".lstrip("/") if base else name
        if "*" in rel:
            if any(True for _ in ROOT.glob(rel)):
                return True
        elif exists(rel) or (not rel.endswith("/") and exists(rel + ".py")):
            return True
    return False


@lru_cache(maxsize=None)
def defined_names(path: Path) -> Dict[str, Optional[ast.AST]]:
    """Top-level names a module defines (classes map to their node, for their members)."""
    names: Dict[str, Optional[ast.AST]] = {}
    for node in ast.parse(path.read_text()).body:
        names.update(_bound(node))
    return names


def _bound(node: ast.AST) -> Dict[str, Optional[ast.AST]]:
    if isinstance(node, ast.ClassDef):
        return {node.name: node}
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return {node.name: None}
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return {(a.asname or a.name).split(".")[0]: None for a in node.names}
    targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
    out = {}
    for t in targets:
        for n in ast.walk(t):
            if isinstance(n, ast.Name):
                out[n.id] = None
    if isinstance(node, (ast.If, ast.Try)):  # TYPE_CHECKING, optional imports
        for child in node.body + getattr(node, "orelse", []) + [h for x in getattr(node, "handlers", []) for h in x.body]:
            out.update(_bound(child))
    return out


def module_file(parts: List[str]) -> Optional[Path]:
    path = ROOT.joinpath(*parts)
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@lru_cache(maxsize=None)
def package_dirs() -> Dict[str, str]:
    """pyproject's package-dir: packages whose folder is not their dotted name (netwatchd.bpf is bpf/)."""
    text = (ROOT / "pyproject.toml").read_text()
    try:
        import tomllib
    except ImportError:  # Python < 3.11: the one line, as pyproject writes it
        line = re.search(r"^package-dir = \{(.*)\}", text, re.M)
        return dict(re.findall(r'"([^"]+)" = "([^"]+)"', line.group(1))) if line else {}
    return dict(tomllib.loads(text)["tool"]["setuptools"].get("package-dir", {}))


def dotted_is_there(name: str) -> bool:
    if name in base_names():  # netwatchd.service, netwatchd.yaml.5
        return True
    for package, folder in package_dirs().items():
        if name == package or name.startswith(package + "."):
            name = folder.replace("/", ".") + name[len(package):]
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        found = module_file(parts[:i])
        if found is None:
            continue
        rest, scope = parts[i:], defined_names(found)
        for attr in rest:
            if scope is None or attr not in scope:
                return False
            node = scope[attr]
            scope = None if node is None else {k: v for child in node.body for k, v in _bound(child).items()}
        return True
    return False


@lru_cache(maxsize=None)
def modules_named() -> Dict[str, List[Path]]:
    """Our modules by their last name (`bpf_util` -> netwatchd/kernel/bpf_util.py)."""
    out: Dict[str, List[Path]] = {}
    for rel in repo_paths()[0]:
        if rel.endswith(".py"):
            out.setdefault(rel.rsplit("/", 1)[-1][:-3], []).append(ROOT / rel)
    return out


@lru_cache(maxsize=None)
def importable(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def member_is_there(module: str, member: str, bound: frozenset) -> bool:
    """`module.Member` in words: a module of ours that defines it, or a module its reader can
    import (`typing.Protocol`), or a name the naming module binds itself (an import alias)."""
    if module in bound:
        return True
    if any(member in defined_names(path) for path in modules_named().get(module, [])):
        return True
    return importable(module)


def strip(name: str) -> str:
    return name.rstrip(".,:;")


def wrong_names(text: Text) -> Iterator[Tuple[str, str]]:
    """(where, name) for each name in `text` that is not there."""
    for m in SLASHED_RE.finditer(text.text):
        name = strip(m.group(1))
        if name.split("/")[0] not in folder_names() or name in EXEMPT or name.startswith(RUN_TIME):
            continue
        if not path_is_there(name, text.bases):
            yield text.where(m.start()), name
    spans = [(m.start(), m.end()) for m in SLASHED_RE.finditer(text.text)]
    file_re = LAYOUT_FILE_RE if text.layout else BARE_RE
    for m in file_re.finditer(text.text):
        name = strip(m.group(1))
        if name in EXEMPT or any(a <= m.start() < b for a, b in spans) or name.startswith(DOTTED_PREFIXES[0] + "."):
            continue
        there = path_is_there(name, text.bases) if text.layout else \
            path_is_there(name, text.bases[:1]) or name in base_names()
        if not there:
            yield text.where(m.start()), name
    for m in DOTTED_RE.finditer(text.text):
        name = strip(m.group(1))
        if name not in EXEMPT and not dotted_is_there(name):
            yield text.where(m.start()), name
    for m in MEMBER_RE.finditer(text.text):
        if m.group(1) not in DOTTED_PREFIXES and m.group(0) not in EXEMPT \
                and not member_is_there(m.group(1), m.group(2), text.bound):
            yield text.where(m.start()), m.group(0)


@lru_cache(maxsize=None)
def all_texts() -> Tuple[Text, ...]:
    return tuple(texts())


def all_wrong_names() -> List[str]:
    return [f"{where}: {name}" for text in all_texts() for where, name in wrong_names(text)]


def test_every_name_in_the_words_exists():
    assert all_wrong_names() == []


def test_the_exemptions_are_still_needed():
    """An exemption nobody names any more goes."""
    named = set()
    for text in all_texts():
        named.update(name for name in EXEMPT if name in text.text)
    assert named == set(EXEMPT)


@pytest.mark.parametrize("text, wrong", [
    ("the queries (netwatchd/connects/querys.py)", ["netwatchd/connects/querys.py"]),
    ("see api/http_api.py and devices/", ["api/http_api.py"]),
    ("as devices.py does", ["devices.py"]),
    ("netwatchd.queries and netwatchd.devices.queries.device_answer", ["netwatchd.queries"]),
    ("netwatchd.devices.records.DeviceLosses.nope", ["netwatchd.devices.records.DeviceLosses.nope"]),
    ("/etc/netwatchd/netwatchd.yaml, run/test, inventory.sqlite3, https://x.org/a.py", []),
    ("tests/**/*.py and tests/nothing/*.py", ["tests/nothing/*.py"]),
    ("http_api.HttpApi, http_guard.ConnectionCap, http_guard.Nope, typing.Protocol", ["http_api.HttpApi",
                                                                                       "http_guard.Nope"]),
    ("netwatchd.bpf, netwatchd.service, netwatchd.yaml.5 and api/dbus", []),
])
def test_a_wrong_name_is_found(text, wrong):
    """The recognisers on sentences of our own (the real texts are checked above)."""
    found = [name for _, name in wrong_names(Text(ROOT / "README.md", 1, text, ("", "", "netwatchd")))]
    assert found == wrong


def test_the_layout_block_is_read_by_folder():
    lines = ["```", "netwatchd/", "  kernel/   all that touches bcc", "", "    links.py   BPF links",
             "    records.py  not in this folder", "  store/    sqlite.py, nothere.py", "bpf/  connect.h", "```"]
    found = [name for text in layout_lines(ROOT / "DEVELOPERS.md", lines, 1) for _, name in wrong_names(text)]
    assert found == ["records.py", "nothere.py"]
