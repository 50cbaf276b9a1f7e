"""Every command and subcommand has a one-line summary and an `Example:` block (as sqlite-utils' test_docs).

The commands are collected at run time, so commands added later are covered too.
"""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from stagewise.cli import cli


def _commands(group: click.Group, path=()):
    ctx = click.Context(group)
    for name in sorted(group.list_commands(ctx)):
        cmd = group.get_command(ctx, name)
        yield (*path, name), cmd
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, (*path, name))


COMMANDS = list(_commands(cli))


def test_the_cli_has_commands():
    assert COMMANDS, "no commands registered on the stagewise group"
    assert ("profile",) in [path for path, _ in COMMANDS]


def test_top_level_help_has_summary_and_example():
    out = CliRunner().invoke(cli, ["--help"])
    assert out.exit_code == 0
    assert "Example:" in out.output
    for path, cmd in COMMANDS:
        if len(path) == 1 and not cmd.hidden:
            assert path[0] in out.output  # listed with its summary


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=lambda p: " ".join(p))
def test_command_help_has_summary_and_example(path):
    cmd = dict(COMMANDS)[path]
    assert (cmd.help or "").strip(), f"stagewise {' '.join(path)} has no help text"
    summary = cmd.help.strip().splitlines()[0].strip()
    assert summary and summary.endswith("."), f"first line should be a one-line summary: {summary!r}"
    out = CliRunner().invoke(cli, [*path, "--help"])
    assert out.exit_code == 0, out.output
    assert "Example:" in out.output, f"stagewise {' '.join(path)} --help has no Example: block"
    example = out.output.split("Example:", 1)[1]
    assert f"stagewise {' '.join(path)}" in example, "the example should show the command itself"
