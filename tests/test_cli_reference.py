"""The README's CLI reference and ``--help`` agree with the CLI itself: every command
and option is listed, every option has help text, every option with a value reads
an environment variable or the README says it does not; ``--version`` answers."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import click

from deploystream.cli.main import cli
from tests.harness import DEPLOYCTL

README = Path(__file__).resolve().parent.parent / "README.md"
_OPTION = re.compile(r"--[a-z][a-z0-9-]*")


def _tree(group: click.Group = cli, path: tuple[str, ...] = ()) -> dict[str, click.Command]:
    out: dict[str, click.Command] = {}
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            out |= _tree(command, (*path, name))
        else:
            out[" ".join((*path, name))] = command
    return out


def _options(command: click.Command) -> set[str]:
    names: set[str] = set()
    for param in command.params:
        if isinstance(param, click.Option):
            names |= {n for n in (*param.opts, *param.secondary_opts) if n.startswith("--")}
    return names - {"--help"}


def _readme_reference() -> tuple[str, dict[str, set[str]], str]:
    """(the reference's first line, command -> options, the text before the block)."""
    text = README.read_text()
    section = text[text.index("## CLI reference") :]
    intro, block = section.split("```\n", 2)[:2]
    lines = block.splitlines()
    commands: dict[str, set[str]] = {}
    current = ""
    for line in lines[1:]:
        head = re.match(r"^  ([a-z][a-z -]*?)\s{2,}(.*)$", line)
        if head and not line.startswith("   "):
            current = head.group(1)
            commands[current] = set(_OPTION.findall(head.group(2)))
        else:
            commands[current] |= set(_OPTION.findall(line))
    return lines[0], commands, intro


def test_readme_lists_every_command_and_option() -> None:
    first, listed, _ = _readme_reference()
    assert set(_OPTION.findall(first)) == _options(cli)
    tree = _tree()
    assert set(listed) == set(tree)
    for name, command in tree.items():
        assert listed[name] == _options(command), name


def test_every_option_has_help_and_an_environment_variable_or_the_readme_says_not() -> None:
    _, _, intro = _readme_reference()
    documented_exceptions = set(_OPTION.findall(intro))
    for name, command in {"": cli, **_tree()}.items():
        for param in command.params:
            if not isinstance(param, click.Option) or param.name == "help":
                continue
            assert param.help, f"deployctl {name} {param.opts[0]}: no help text"
            if not param.is_flag and not param.envvar:
                assert param.opts[0] in documented_exceptions, f"{name} {param.opts[0]}"


def test_version() -> None:
    out = subprocess.run([DEPLOYCTL, "--version"], capture_output=True, text=True, check=True)
    assert re.match(r"^deployctl, version \d+\.\d+", out.stdout)


def test_bare_command_groups_show_their_help() -> None:
    for argv in ([], ["dlq"], ["keys"]):
        out = subprocess.run([DEPLOYCTL, *argv], capture_output=True, text=True)
        assert out.returncode == 2
        assert out.stderr.startswith("Usage: deployctl") and "Commands:" in out.stderr
