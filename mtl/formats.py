"""File formats by suffix, and the rules of CSV and TSV, in one place for training data and corpora.

Labeled data (training and eval files) and corpora to label share every suffix but ``.txt``: for
labeled data it is CoNLL (CoNLL-2003 ships ``train.txt``), for a corpus one text per line.

CSV and TSV follow one set of rules everywhere: TSV is read with quoting off (GLUE's files hold
bare quotes inside texts), CSV follows RFC 4180, so a quoted field may span lines. Two engines apply
them: Python's csv module for labeled data, whose every bad row must be reported by file and line,
and Arrow's reader for corpora, which must be fast and never stop on a row.
"""

from __future__ import annotations

from dataclasses import dataclass

_TABLES = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}
LABELED_DATA_SUFFIXES = {**_TABLES, ".conll": "conll", ".txt": "conll", ".train": "conll", ".testa": "conll",
                         ".testb": "conll"}
CORPUS_SUFFIXES = {**_TABLES, ".txt": "text", ".text": "text"}


@dataclass(frozen=True)
class Dialect:
    delimiter: str
    quoted: bool   # fields may be quoted, and a quoted field may hold the delimiter and newlines


def dialect(fmt: str) -> Dialect:
    """The rules of ``csv`` or ``tsv``."""
    return Dialect(delimiter="\t", quoted=False) if fmt == "tsv" else Dialect(delimiter=",", quoted=True)
