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


# names that start like a module but are not one: the model folder's file and MLflow's tags
NOT_CODE = {"mtl.json", "mtl.model_version", "mtl.alias_history", "mtl.promoted_reason"}
MODULE_PATH = re.compile(r"`(mtl(?:\.[A-Za-z_]\w*)+)(?:\([^`]*\))?`|`(mtl/[\w/]+\.py)`")


def documented_names() -> list[tuple[str, str]]:
    """(where, name) for every `mtl.module.name` and `mtl/.../module.py` a document shows in code."""
    found = []
    for document in DOCUMENTS:
        for number, line in enumerate(document.read_text().splitlines(), start=1):
            for dotted, path in MODULE_PATH.findall(line):
                if dotted not in NOT_CODE:
                    found.append((f"{document.name}:{number}", dotted or path))
    return found


NAMES = documented_names()


@pytest.mark.parametrize(("where", "name"), NAMES, ids=[where for where, _ in NAMES])
def test_a_documented_module_or_name_exists(where, name):
    if name.endswith(".py"):
        assert (REPO / name).is_file(), f"{where}: no file {name}"
        return
    parts = name.split(".")
    for split in range(len(parts), 0, -1):  # the longest importable module, then attributes of it
        try:
            found = importlib.import_module(".".join(parts[:split]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[split:]:
            assert hasattr(found, attribute), f"{where}: {name}: {'.'.join(parts[:split])} has no {attribute}"
            found = getattr(found, attribute)
        return
    pytest.fail(f"{where}: no module {name}")
