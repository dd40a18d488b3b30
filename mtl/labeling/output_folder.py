"""The output folder of a label job: what it may touch, how a run resumes, and how it commits.

    <output>/part-<run>-00000.parquet ...   the labeled rows, named with the run's id
    <output>/_SUCCESS                       JSON: the run id and its files; written last
    <output>/_mtl_staging/                  this job's own, while a run is unfinished:
        run.json                              the run id, its input files, what it replaces, who writes
        data/                                 Ray Data writes the labeled blocks here
        checkpoint/                           Ray Data's record of the rows already written
        commit.json                           the file list, once labeling is done

Object storage has no atomic rename, so completeness is told by ``_SUCCESS`` alone: it is written
after every file it lists is in place, and a reader that honours it sees the whole output or none.
The job deletes only what it wrote: its staging folder, and with ``--overwrite`` the files that the
earlier ``_SUCCESS`` lists. A folder that holds anything else is refused, never emptied.

Ray Data's checkpoint is the record of what is done: a write task records its rows as pending,
writes its data file, then commits the record. ``reconcile`` holds the staged data to that record,
so that a write task of a killed attempt which finished late, while the next attempt was already
recovering, neither loses its rows nor leaves them twice.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field

from mtl import storage

STAGING = "_mtl_staging"
SUCCESS = "_SUCCESS"
# Ray Data names a write task's record <block>.parquet, pending <block>.pending.parquet, and its
# data files <block>-<n>.parquet, where <block> is <dataset uuid>_<write uuid>_<task index>
PENDING = ".pending.parquet"


@dataclass
class Run:
    """One labeling of one input into one output, possibly over several attempts."""

    output: str
    run_id: str
    inputs: list[str]
    replaces: list[str] = field(default_factory=list)   # files of the complete output this run overwrites
    resumed: bool = False
    earlier_attempt: dict | None = None   # who wrote before this attempt, as begin_run's ``attempt`` said

    @property
    def staging(self) -> str:
        return storage.join(self.output, STAGING)

    @property
    def data(self) -> str:
        return storage.join(self.staging, "data")



def checkpoint_path(output: str) -> str:
    """Where Ray Data records the rows already written for ``output``."""
    return storage.join(output, STAGING, "checkpoint")


def _run_record(output: str) -> str:
    return storage.join(output, STAGING, "run.json")


def _commit_record(output: str) -> str:
    return storage.join(output, STAGING, "commit.json")


def completed_files(output: str) -> list[str] | None:
    """The files of a complete output (from its ``_SUCCESS``), or None when it is not complete."""
    marker = storage.join(output, SUCCESS)
    if not storage.is_file(marker):
        return None
    text = storage.read_text(marker)
    try:
        names = json.loads(text)["files"]
    except (ValueError, TypeError, KeyError):  # a _SUCCESS of versions before 0.2: one file name a line
        names = [name for name in text.splitlines() if name]
    return [storage.join(output, name) for name in names]


def begin_run(output: str, inputs: list[str], *, overwrite: bool, attempt: dict | None = None) -> Run:
    """The unfinished run to resume, or a new one; refuses a folder that holds files of someone else.
    ``attempt`` says who writes a new run (the Ray job); a resumed run says who wrote it last, and
    changes hands with ``take_over`` once that one has ended."""
    record = _run_record(output)
    if storage.is_file(record):
        saved = json.loads(storage.read_text(record))
        if saved["inputs"] == inputs:
            return Run(output=output, run_id=saved["run_id"], inputs=inputs, replaces=saved["replaces"], resumed=True,
                       earlier_attempt=saved.get("attempt"))
        if not overwrite:
            raise ValueError(f"--output: {output} holds an unfinished run over other input files; "
                             "pass --overwrite to discard it, or choose another folder")
        storage.delete_folder(storage.join(output, STAGING))
    _refuse_foreign_files(output)
    run = Run(output=output, run_id=uuid.uuid4().hex[:12], inputs=inputs,
              replaces=[storage.name(path) for path in completed_files(output) or []])
    storage.write_text(record, json.dumps({"run_id": run.run_id, "inputs": inputs, "replaces": run.replaces,
                                           "attempt": attempt}))
    # from here the old output is being replaced: readers must no longer take it for complete
    storage.delete_file(storage.join(output, SUCCESS))
    return run


def take_over(run: Run, attempt: dict) -> None:
    """Record ``attempt`` as the one writing the resumed ``run`` from now on."""
    record = _run_record(run.output)
    storage.write_text(record, json.dumps({**json.loads(storage.read_text(record)), "attempt": attempt}))


def _refuse_foreign_files(output: str) -> None:
    ours = {storage.name(path) for path in completed_files(output) or []} | {SUCCESS}
    foreign = [path for path in storage.list_files(output, recursive=True, relative=True)
               if not storage.is_hidden(path) and path not in ours]
    if foreign:
        shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
        raise ValueError(f"--output: {output} holds {len(foreign)} file(s) this job did not write ({shown}); "
                         "label into an empty folder or one that holds an earlier output of this job")


def reconcile(run: Run) -> int:
    """Hold the staged data files to Ray Data's checkpoint, the record of what is done, and return
    how many written blocks it had to forget (their rows must be labeled again).

    A committed record whose data file is gone is forgotten; a data file without a committed record
    (its task never finished, or finished after the next attempt took its rows) is deleted, and so
    are pending records. Run it when no other attempt is writing: it is what Ray Data does with
    pending records on resuming, extended to the records an attempt killed late still committed."""
    checkpoints = storage.list_files(checkpoint_path(run.output))
    committed = {_block_of(path): path for path in checkpoints if not path.endswith(PENDING)}
    data = storage.list_files(run.data)
    written = {_block_of(path) for path in data}
    for path in data:
        if _block_of(path) not in committed:
            storage.delete_file(path)
    for path in checkpoints:
        if path.endswith(PENDING):
            storage.delete_file(path)
    lost = [path for block, path in committed.items() if block not in written]
    for path in lost:
        storage.delete_file(path)
    return len(lost)


def _block_of(path: str) -> str:
    return storage.name(path).removesuffix(".parquet").removesuffix(".pending").split("-")[0]


def commit(run: Run) -> list[str]:
    """Move the labeled files into the output under the run's names, write ``_SUCCESS``, then remove
    what the run replaced and its staging folder. Safe to call again after a kill at any point."""
    plan_file = _commit_record(run.output)
    if not storage.is_file(plan_file):
        parts = [path for path in storage.list_files(run.data) if path.endswith(".parquet")]
        plan = [[storage.name(part), f"part-{run.run_id}-{number:05d}.parquet"] for number, part in enumerate(parts)]
        storage.write_text(plan_file, json.dumps(plan))
    plan = json.loads(storage.read_text(plan_file))
    for source, target in plan:
        if storage.is_file(storage.join(run.data, source)):
            storage.move(storage.join(run.data, source), storage.join(run.output, target))
    names = [target for _, target in plan]
    storage.write_text(storage.join(run.output, SUCCESS), json.dumps({"run_id": run.run_id, "files": names}))
    for old in set(run.replaces) - set(names):
        storage.delete_file(storage.join(run.output, old))
    storage.delete_folder(run.staging)
    return [storage.join(run.output, name) for name in names]


def pending_commit(output: str) -> Run | None:
    """A run that finished labeling but was killed while committing, if there is one."""
    record = _run_record(output)
    if not storage.is_file(_commit_record(output)):
        return None
    saved = json.loads(storage.read_text(record))
    return Run(output=output, run_id=saved["run_id"], inputs=saved["inputs"], replaces=saved["replaces"], resumed=True)
