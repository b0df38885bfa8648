"""The libraries report through `logging`; the command line shows their records as
`gen: ...` lines on stderr."""

from __future__ import annotations

import ast
import logging
from pathlib import Path

import pytest

from gen.cli import LIBRARIES, main

ROOT = Path(__file__).resolve().parents[1]


def _library_files():
    for package in LIBRARIES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "cli" not in path.relative_to(ROOT).parts:  # the command line is what prints
                yield path


@pytest.mark.parametrize("path", list(_library_files()), ids=lambda p: str(p.relative_to(ROOT)))
def test_library_code_does_not_print(path):
    calls = [node.lineno for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print"]
    assert not calls, f"{path.relative_to(ROOT)} prints at lines {calls}; log through logging.getLogger(__name__)"


def test_the_command_line_shows_library_records_on_stderr(capsys):
    assert main(["models"]) == 0
    capsys.readouterr()
    logging.getLogger("gen.train.loop").info("stopping at step %d", 7)
    logging.getLogger("metrics.stats").warning("few samples")
    logging.getLogger("samplers").debug("not shown")
    out, err = capsys.readouterr()
    assert out == "" and err == "gen: stopping at step 7\ngen: warning: few samples\n"
    assert main(["models"]) == 0 and capsys.readouterr().err == ""  # one handler, however often main runs
