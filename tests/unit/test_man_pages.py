"""The man pages, the D-Bus interface file and the bash completion stay in step with their sources.

- netwatchd.yaml(5) and org.netwatchd.Netwatchd1(5), and systemd/org.netwatchd.Netwatchd1.Manager.xml,
  are what man/generate.py makes now from config/netwatchd.yaml and the service's introspection
  (`make man` regenerates them);
- the generator refuses a template that leaves a D-Bus member undocumented or documents one the
  service does not have;
- the hand-written pages and the completion name every command and flag the parsers accept;
- every page is valid roff (man --warnings says nothing).
"""
from __future__ import annotations

import argparse
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from netwatchd import daemon
from netwatchd.config import DaemonConfig, as_dict
from netwatchd.ctl import main as ctl_main
from tests.conftest import requires

ROOT = Path(__file__).resolve().parents[2]
MAN = ROOT / "man"


def load_generator():
    spec = importlib.util.spec_from_file_location("man_generate", MAN / "generate.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


gen = load_generator()


@pytest.mark.parametrize("path", [gen.YAML_PAGE, gen.DBUS_PAGE, gen.DBUS_XML], ids=lambda p: p.name)
def test_committed_file_is_what_its_sources_generate(path):
    expected = gen.generated()[path]
    assert path.read_text() == expected, \
        f"{path.relative_to(ROOT)} differs from what its sources generate: run `make man` and commit it"


def test_yaml_page_has_every_config_key_with_the_codes_default():
    _, keys = gen.config_keys(gen.CONFIG.read_text())

    def flat(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict):
                yield from flat(v, f"{prefix}{k}.")
            else:
                yield f"{prefix}{k}", v
    defaults = dict(flat(as_dict(DaemonConfig())))
    assert [k.path for k in keys] == list(defaults)
    assert all(k.comment for k in keys), [k.path for k in keys if not k.comment]
    page = gen.YAML_PAGE.read_text()
    for key in keys:
        assert f"\\fB{key.path}\\fR (default: \\fB{gen.roff_text(key.default)}\\fR)" in page


def test_yaml_page_key_text_is_the_comment_above_it():
    _, keys = gen.config_keys(gen.CONFIG.read_text())
    (window,) = [k for k in keys if k.path == "connections.max_window_sec"]
    assert window.default == "3600"
    assert window.comment == ["Longest window Summary accepts, in seconds (1..3600); per-second counts are kept this long."]
    (listen,) = [k for k in keys if k.path == "metrics.listen"]
    assert listen.default == '"127.0.0.1:9637"'


def test_dbus_generator_refuses_an_undocumented_or_unknown_member():
    members = gen.introspected_members()
    template = gen.DBUS_TEMPLATE.read_text()
    with pytest.raises(gen.SourceError, match="does not document: property Version"):
        gen.dbus_page(template.replace("@property Version\n", ""), members)
    with pytest.raises(gen.SourceError, match="documents the method Frobnicate, which the service does not have"):
        gen.dbus_page(template + "@method Frobnicate\n", members)
    with pytest.raises(gen.SourceError, match="documents the signal AlertRaised twice"):
        gen.dbus_page(template + "@signal AlertRaised\n", members)


def test_dbus_page_shows_each_signature_from_the_introspection():
    page = gen.DBUS_PAGE.read_text()
    assert "\\fBSummary\\fR(\\fIu\\fR pid, \\fIs\\fR command, \\fIu\\fR duration_sec) \\(-> \\fIa{sv}\\fR" in page
    assert "\\fBListConnections\\fR(\\fIu\\fR pid, \\fIu\\fR limit) \\(-> \\fIaa{sv}\\fR, \\fIb\\fR" in page
    assert "\\fBAlertRaised\\fR(\\fIs\\fR id, \\fIs\\fR kind, \\fIs\\fR subject)" in page
    assert "readonly a{st} ProtocolTotals = ...;" in page


def parser_of(parse_args, monkeypatch) -> argparse.ArgumentParser:
    """The ArgumentParser a module's parse_args() builds (caught as it is asked to parse)."""
    caught = []

    def catch(self, *args, **kwargs):
        caught.append(self)
        raise SystemExit(0)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", catch)
    with pytest.raises(SystemExit):
        parse_args([])
    monkeypatch.undo()
    return caught[0]


def long_options(parser: argparse.ArgumentParser) -> list:
    return sorted({o for a in parser._actions for o in a.option_strings if o.startswith("--")})


def ctl_parser_words(monkeypatch):
    """({command: its flags} as netwatchctl's parser has them, the global flags)."""
    parser = parser_of(ctl_main.parse_args, monkeypatch)
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return {name: long_options(p) for name, p in sub.choices.items()}, long_options(parser)


def test_netwatchctl_page_and_completion_name_every_command_and_flag(monkeypatch):
    commands, global_flags = ctl_parser_words(monkeypatch)
    assert {"status", "summary", "devices", "device", "replay"} <= set(commands)
    page = (MAN / "netwatchctl.1").read_text()
    completion = (ROOT / "completion" / "netwatchctl").read_text()
    for command, flags in commands.items():
        assert f".B {command}" in page or f".BI {command} " in page, command
        assert command in completion.split('commands="')[1].split('"')[0], command
        for flag in flags:
            assert flag.replace("-", "\\-") in page, (command, flag)
            assert flag in completion, (command, flag)
    for flag in global_flags:
        assert flag.replace("-", "\\-") in page and flag in completion, flag


def test_netwatchd_page_names_every_option(monkeypatch):
    options = long_options(parser_of(daemon.parse_args, monkeypatch))
    assert options == ["--check-config", "--config", "--help", "--version"]
    page = (MAN / "netwatchd.8").read_text()
    assert all(o.replace("-", "\\-") in page for o in options), options


@pytest.mark.parametrize("page", ["netwatchd.8", "netwatchctl.1", "netwatchd.yaml.5", "org.netwatchd.Netwatchd1.5"])
def test_page_is_valid_roff(page):
    requires(shutil.which("man") is not None, "needs man (man-db; make setup-test installs it)")
    r = subprocess.run(["man", "--warnings", "-l", "-P", "cat", str(MAN / page)], capture_output=True, text=True,
                       env={"PATH": "/usr/bin:/bin", "MANWIDTH": "80", "LANG": "C.UTF-8"}, timeout=60)
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr
    title = page.rsplit(".", 1)[0].upper() + "(" + page.rsplit(".", 1)[1] + ")"
    assert r.stdout.splitlines()[0].startswith(title), r.stdout[:200]


def test_debian_changelog_version_is_the_packages():
    from netwatchd import __version__

    first = (ROOT / "debian" / "changelog").read_text().splitlines()[0]
    assert first.startswith(f"netwatchd ({__version__}) "), first


def test_completion_is_silent_when_the_daemon_does_not_answer(tmp_path):
    """No daemon (the bus address leads nowhere): device addresses complete to nothing, with nothing
    on stderr; the commands still complete."""
    script = (f'source {ROOT / "completion" / "netwatchctl"}\n'
              'COMP_LINE="$1"; COMP_POINT=${#COMP_LINE}; _netwatchctl; printf "%s\\n" "${COMPREPLY[@]}"')
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
           "DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={tmp_path}/no-bus-here"}
    ctl = Path(sys.executable).parent / "netwatchctl"
    assert ctl.exists(), "netwatchctl is not installed in this venv (make setup-test)"
    r = subprocess.run(["bash", "-c", script, "t", "netwatchctl device "], capture_output=True, text=True, env=env,
                       timeout=30)
    assert r.returncode == 0 and r.stdout.strip() == "" and r.stderr == "", r
    r = subprocess.run(["bash", "-c", script, "t", "netwatchctl dev"], capture_output=True, text=True, env=env,
                       timeout=30)
    assert sorted(r.stdout.split()) == ["device", "devices"] and r.stderr == "", r
