"""Every command's --help shows each parameter's help text whole.

rich reads `[...]` in help text as markup and silently drops it (`[default: runs/...]` vanished
from `netspec train --help`), so every word written in a help string must reach the screen."""

from __future__ import annotations

import re

import pytest
import typer.main
from typer.testing import CliRunner

from netspec.cli import app

COMMANDS = typer.main.get_command(app).commands


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_shows_every_word_of_every_parameter_help(name):
    result = CliRunner().invoke(app, [name, "--help"], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    shown = " ".join(re.sub(r"[│╭╮╰╯─]", " ", result.output).split())
    for param in COMMANDS[name].params:
        for word in (getattr(param, "help", None) or "").split():
            assert word in shown, f"netspec {name} --help lost {word!r} of {param.name}'s help"
