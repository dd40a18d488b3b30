"""The docs cannot drift from the command line: every `python -m jobs.*` command in README.md and
docs/ must parse with that job's own argument parser."""

import importlib
import re
import shlex

import pytest
from conftest import REPO

DOCUMENTS = [REPO / "README.md", REPO / "CONTRIBUTING.md", *sorted((REPO / "docs").glob("*.md"))]
COMMAND = re.compile(r"python -m (jobs\.\w+)(.*)")


def documented_commands() -> list[tuple[str, str, list[str]]]:
    """(where, job module, arguments) for each command, with backslash-continued lines joined."""
    found = []
    for document in DOCUMENTS:
        text = re.sub(r"\\\n\s*", " ", document.read_text())
        for number, line in enumerate(text.splitlines(), start=1):
            match = COMMAND.search(line)
            if match:
                arguments = re.split(r"\s(?:#|&&|\||&)(?:\s|$)", match.group(2) + " ")[0]
                found.append((f"{document.name}:{number}", match.group(1), shlex.split(arguments)))
    return found


COMMANDS = documented_commands()


def test_the_docs_show_every_job():
    shown = {module for _, module, _ in COMMANDS}
    assert shown >= {"jobs.train", "jobs.label", "jobs.export", "jobs.evaluate", "jobs.registry", "jobs.distill",
                     "jobs.tune"}


@pytest.mark.parametrize(("where", "module", "arguments"), COMMANDS, ids=[where for where, _, _ in COMMANDS])
def test_a_documented_command_parses(where, module, arguments):
    job = importlib.import_module(module)
    try:
        job.parse_args(arguments)
    except SystemExit as exit_:
        pytest.fail(f"{where}: python -m {module} {shlex.join(arguments)} does not parse (exit {exit_.code})")
