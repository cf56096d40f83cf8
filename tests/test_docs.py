"""The documentation (README.md and docs/*.md) says what the code does: its relative links and
anchors resolve, every ``s360bridge`` command it shows parses as the command line would parse
it, docs/cli.md documents every built-in command and option, and its example institution files
load."""

from __future__ import annotations

import functools
import os
import re
import shlex
from pathlib import Path

import click
import pytest
import yaml

from s360bridge.core.bridge import Bridge
from s360bridge.core.cli.main import cli
from s360bridge.core.config import load_settings
from s360bridge.core.plugin.manager import Hooks

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^ *```(\w*)\n(.*?)^ *```", re.S | re.M)  # indented in a list too
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
SPAN = re.compile(r"`((?:\.venv/bin/)?s360bridge(?: [^`]*)?)`")
SHELL_END = {"|", "||", "&&", ";", "&", ">", ">>", "<", "2>"}


@functools.cache
def command_line() -> click.Group:
    """The ``s360bridge`` group with the plugins' commands, as ``s360bridge`` itself adds them."""
    Hooks().add_commands(cli)
    return cli


def page_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


def prose(text: str) -> str:
    """The text without its fenced blocks."""
    return FENCE.sub("", text)


def anchors(text: str) -> set[str]:
    """GitHub's anchors of a page's headings."""
    found = set()
    for heading in re.findall(r"^#{1,6} (.+)$", prose(text), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
        found.add(slug.replace(" ", "-"))
    return found


def shell_commands(text: str) -> list[list[str]]:
    """The arguments of every ``s360bridge`` command in the page's ``sh`` blocks."""
    commands = []
    for lang, block in FENCE.findall(text):
        if lang != "sh":
            continue
        for line in block.replace("\\\n", " ").splitlines():
            lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
            lexer.whitespace_split = True
            tokens = list(lexer)
            for i, token in enumerate(tokens):
                if os.path.basename(token) == "s360bridge":
                    args = []
                    for t in tokens[i + 1:]:
                        if t in SHELL_END:
                            break
                        args.append(t)
                    commands.append(args)
    return commands


def resolve(args: list[str]) -> tuple[click.Command, list[str], list[str]]:
    """Walk the command groups as click does: answer the command, its path and its own
    arguments; fail on an unknown option or command on the way."""
    cmd, path = command_line(), []
    while True:
        if not isinstance(cmd, click.Group):
            return cmd, path, args
        parser = cmd.make_parser(click.Context(cmd, info_name=" ".join(["s360bridge", *path])))
        _, rest, _ = parser.parse_args(list(args))
        if not rest:
            return cmd, path, args
        assert rest[0] in cmd.commands, f"no command s360bridge {' '.join(path + rest[:1])}"
        cmd, path, args = cmd.commands[rest[0]], path + rest[:1], rest[1:]


EXAMPLES = [(page_id(p), args) for p in PAGES for args in shell_commands(p.read_text("utf-8"))]


def test_the_pages_show_commands():
    assert len(EXAMPLES) > 30


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_links_and_anchors_resolve(page):
    text = page.read_text("utf-8")
    for target in LINK.findall(prose(text)):
        if re.match(r"^[a-z]+:", target):
            continue  # http(s), mailto
        file, _, anchor = target.partition("#")
        linked = (page.parent / file).resolve() if file else page
        assert linked.exists(), f"{page_id(page)}: {target}: no such file"
        if anchor and linked.suffix == ".md":
            assert anchor in anchors(linked.read_text("utf-8")), \
                f"{page_id(page)}: {target}: no such heading"


@pytest.mark.parametrize("page, args", EXAMPLES,
                         ids=[f"{p}: {' '.join(a)[:60]}" for p, a in EXAMPLES])
def test_shown_command_parses(page, args):
    """Options, required options and arguments, as the command line would take them."""
    cmd, path, rest = resolve(args)
    if "--help" in rest or "--version" in rest or isinstance(cmd, click.Group):
        return
    parser = cmd.make_parser(click.Context(cmd, info_name=" ".join(path)))
    opts, extra, _ = parser.parse_args(list(rest))
    assert not extra, f"s360bridge {' '.join(path)}: unexpected arguments {extra}"
    for param in cmd.params:
        if param.required:
            assert param.name in opts, f"s360bridge {' '.join(path)}: {param.name} is missing"


def test_commands_in_the_prose_exist():
    """Inline `s360bridge …` spans (synopses with placeholders): the command exists and
    takes every option named."""
    for page in PAGES:
        for span in SPAN.findall(prose(page.read_text("utf-8"))):
            words = span.split()[1:]
            cmd, path = command_line(), []
            while isinstance(cmd, click.Group) and words and words[0] in cmd.commands:
                cmd, path = cmd.commands[words[0]], path + [words.pop(0)]
            if words and isinstance(cmd, click.Group):  # an option, or a placeholder
                assert words[0].startswith("-") or words[0].isupper(), \
                    f"{page_id(page)}: `{span}`: no command s360bridge {words[0]}"
            names = {n for p in cmd.params for n in getattr(p, "opts", [])} | {"--help"}
            for word in words:
                option = word.strip("[]").split("=")[0]
                if option.startswith("-") and option not in ("-", "--"):
                    assert option in names, f"{page_id(page)}: `{span}`: no option {option}"


def builtin_commands() -> dict[str, click.Command]:
    """Every command and subcommand that s360bridge itself provides (not a test plugin's)."""
    found = {}

    def walk(cmd, path):
        for name, sub in sorted(cmd.commands.items()):
            if sub.callback.__module__.startswith("s360bridge."):
                found[" ".join([*path, name])] = sub
                if isinstance(sub, click.Group):
                    walk(sub, [*path, name])
    walk(command_line(), [])
    return found


def cli_sections() -> dict[str, str]:
    """docs/cli.md's sections by their heading's command (`### \\`s360bridge run\\``)."""
    text = (ROOT / "docs" / "cli.md").read_text("utf-8")
    parts = re.split(r"^### `s360bridge ([^`]+)`\n", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_cli_page_explains_the_config_option():
    intro = (ROOT / "docs" / "cli.md").read_text("utf-8").split("\n## ")[0]
    assert "`-c` / `--config`" in intro


def test_cli_page_documents_every_command_and_option():
    """A section per top-level command; its subcommands, options (but the shared --config,
    explained once) and arguments in it."""
    sections, missing = cli_sections(), []
    commands = builtin_commands()
    assert {"run", "status", "import", "offers create", "demo"} <= set(commands)
    for name, cmd in commands.items():
        top = name.split()[0]
        section = sections.get(top)
        if section is None:
            missing.append(f"no section ### `s360bridge {top}`")
            continue
        if name not in section:
            missing.append(f"s360bridge {name} is not in its section")
        for param in cmd.params:
            if isinstance(param, click.Argument):
                if param.name.upper() not in section:
                    missing.append(f"s360bridge {name}: argument {param.name.upper()}")
                continue
            for opt in param.opts:
                shared = opt == "--config" and top not in ("demo", "simulate")
                if opt.startswith("--") and not shared and opt not in section:
                    missing.append(f"s360bridge {name}: option {opt}")
    assert not missing, "docs/cli.md: " + "; ".join(missing)


YAML_EXAMPLES = [(page_id(p), block) for p in PAGES
                 for lang, block in FENCE.findall(p.read_text("utf-8"))
                 if lang == "yaml" and re.search(r"^institution:", block, re.M)]


@pytest.mark.parametrize("page, block", YAML_EXAMPLES, ids=[p for p, _ in YAML_EXAMPLES])
def test_example_institution_files_load(page, block, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the example's relative paths (var/…) land here
    path = tmp_path / "example.yaml"
    path.write_text(block, "utf-8")
    names = set(re.findall(r"\$env: (\w+)", block))
    environ = {name: "https://example.org" if name.endswith("_URL") else f"value-of-{name}"
               for name in names}  # each secret its own, as in production
    environ["S360BRIDGE_DATABASE_URL"] = f"sqlite:///{tmp_path}/engine.db"
    settings = load_settings([path], environ=environ)
    Bridge(settings, schema="ignore").close()  # options are checked when the bridge is built
    assert yaml.safe_load(block)["institution"] in settings.institutions


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_test_a_page_names_exists(page):
    """A page that names a test as its proof (`tests/x.py::test_y`, docs/guarantees.md) names
    one that exists, so that a renamed or removed test cannot leave a guarantee unproven."""
    named = set(re.findall(r"(tests/[\w/]+\.py)::(test_\w+)", page.read_text("utf-8")))
    missing = [f"{file}::{name}" for file, name in sorted(named)
               if not (ROOT / file).exists()
               or not re.search(rf"^def {name}\(", (ROOT / file).read_text("utf-8"), re.M)]
    assert not missing, f"{page_id(page)} names tests that do not exist: {missing}"
