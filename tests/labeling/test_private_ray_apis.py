"""The private Ray APIs the label job leans on where Ray has no public one (each place says why).
These fail when a Ray release moves or changes one, before a label job does; no Ray is started."""

import inspect

import pyarrow.csv as pacsv
import pyarrow.fs as pafs
from ray.data.datasource import FileBasedDatasource

from mtl.labeling.corpus import ROW_BITS, ROW_ID, NumberedCSV, NumberedText


def read_blocks(source, path: str) -> list:
    filesystem = pafs.LocalFileSystem()
    with filesystem.open_input_stream(path) as stream:
        return list(source._read_stream(stream, path))


def test_numbered_text_reads_every_line_of_a_file_with_its_row_id(tmp_path):
    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    first.write_text("one\n\nthree\n")
    second.write_text("four\n")
    files = [str(first), str(second)]
    source = NumberedText(files, file_numbers={path: number for number, path in enumerate(files)},
                          drop_empty_lines=False)
    assert isinstance(source, FileBasedDatasource)
    rows = [row for block in read_blocks(source, str(second)) + read_blocks(source, str(first))
            for row in block.to_pylist()]
    assert rows == [{"text": "four", ROW_ID: 1 << ROW_BITS},
                    {"text": "one", ROW_ID: 0}, {"text": "", ROW_ID: 1}, {"text": "three", ROW_ID: 2}]


def test_numbered_csv_takes_arrow_csv_options_and_numbers_its_records(tmp_path):
    corpus = tmp_path / "corpus.tsv"
    corpus.write_text("text\tlabel\nfine day\t1\nbad day\t0\n")
    source = NumberedCSV([str(corpus)], file_numbers={str(corpus): 3},
                         arrow_csv_args={"parse_options": pacsv.ParseOptions(delimiter="\t")})
    rows = [row for block in read_blocks(source, str(corpus)) for row in block.to_pylist()]
    assert rows == [{"text": "fine day", "label": 1, ROW_ID: 3 << ROW_BITS},
                    {"text": "bad day", "label": 0, ROW_ID: (3 << ROW_BITS) + 1}]


def test_the_gcs_job_table_is_where_attempts_reads_it():
    from ray._private import state

    assert inspect.signature(state.jobs).parameters == {}
    assert callable(state.GlobalState.job_table)
