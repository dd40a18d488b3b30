import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import DEMO, shared_data

from mtl.data.readers import read_rows
from mtl.errors import DataError
from mtl.task_config import DataSource

CONLL_IOB2 = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
. . O O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER
"""


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_conll_skips_docstart_and_splits_sentences(tmp_path):
    rows = read_rows(DataSource(path=str(write(tmp_path, "a.txt", CONLL_IOB2))), "tagging")
    assert [row["tokens"] for row in rows] == [["EU", "rejects", "German", "."], ["Peter", "Blackburn"]]
    assert rows[0]["tags"] == ["B-ORG", "O", "B-MISC", "O"]
    assert rows[1]["origin"].endswith("a.txt:8")


def test_conll_iob1_is_converted_to_iob2(tmp_path):
    text = "EU NNP I-NP I-ORG\nrejects VBZ I-VP O\nPeter NNP I-NP I-PER\nBlackburn NNP I-NP I-PER\nX NNP I-NP B-PER\n"
    rows = read_rows(DataSource(path=str(write(tmp_path, "eng.train", text)), scheme="iob1"), "tagging")
    assert rows[0]["tags"] == ["B-ORG", "O", "B-PER", "I-PER", "B-PER"]


def test_conll_with_two_tab_separated_columns(tmp_path):
    text = "Empire\tB-location\nState\tI-location\n\t\nhi\tO\n"
    rows = read_rows(DataSource(path=str(write(tmp_path, "w.conll", text))), "tagging")
    assert [row["tags"] for row in rows] == [["B-location", "I-location"], ["O"]]


def test_conll_bad_tag_names_file_and_line(tmp_path):
    path = write(tmp_path, "bad.txt", "EU NNP B-NP B-ORG\nrejects VBZ B-VP PER\n")
    with pytest.raises(DataError, match=r"bad.txt:2: tag 'PER' is not BIO"):
        read_rows(DataSource(path=str(path)), "tagging")


def test_conll_line_without_tag_names_line(tmp_path):
    path = write(tmp_path, "bad.txt", "EU B-ORG\nrejects\n")
    with pytest.raises(DataError, match=r"bad.txt:2: expected a token and a tag"):
        read_rows(DataSource(path=str(path)), "tagging")


def test_empty_file_is_an_error(tmp_path):
    path = write(tmp_path, "empty.tsv", "sentence\tlabel\n")
    with pytest.raises(DataError, match="empty.tsv: the file holds no examples"):
        read_rows(DataSource(path=str(path), text_column="sentence"), "classification")


def test_missing_file_is_named(tmp_path):
    with pytest.raises(DataError, match="nope.tsv: no such file"):
        read_rows(DataSource(path=str(tmp_path / "nope.tsv")), "classification")


def test_tsv_keeps_bare_quotes_and_reads_columns_by_name(tmp_path):
    path = write(tmp_path, "t.tsv", 'sentence\tlabel\n"quoted" start \t1\nplain\t0\n')
    rows = read_rows(DataSource(path=str(path), text_column="sentence"), "classification")
    assert [(row["text"], row["label"]) for row in rows] == [('"quoted" start', "1"), ("plain", "0")]


def test_csv_without_header_by_index_with_quoted_newlines(tmp_path):
    path = write(tmp_path, "c.csv", 'card_arrival,"where is\nmy card?"\nrefund,give it back\n')
    source = DataSource(path=str(path), header=False, text_column=1, label_column=0)
    rows = read_rows(source, "classification")
    assert rows[0] == {"text": "where is\nmy card?", "label": "card_arrival", "origin": f"{path}:2"}
    assert rows[1]["origin"] == f"{path}:3"


def test_missing_column_names_file_line_and_columns(tmp_path):
    path = write(tmp_path, "t.tsv", "sentence\tlabel\nhello\t1\n")
    with pytest.raises(DataError, match=r"t.tsv:2: no text_column 'text'; the columns are \['sentence', 'label'\]"):
        read_rows(DataSource(path=str(path)), "classification")


def test_empty_text_names_line(tmp_path):
    path = write(tmp_path, "t.tsv", "text\tlabel\nhello\t1\n \t0\n")
    with pytest.raises(DataError, match=r"t.tsv:3: text_column 'text' is empty"):
        read_rows(DataSource(path=str(path)), "classification")


def test_jsonl_tagging_and_classification_rows(tmp_path):
    line = {"text": "Hi Bob", "tokens": ["Hi", "Bob"], "tags": ["O", "B-PER"], "stars": 5}
    path = write(tmp_path, "d.jsonl", json.dumps(line) + "\n\n")
    assert read_rows(DataSource(path=str(path)), "tagging")[0]["tags"] == ["O", "B-PER"]
    assert read_rows(DataSource(path=str(path), label_column="stars"), "classification")[0]["label"] == "5"


def test_jsonl_bad_json_names_line(tmp_path):
    path = write(tmp_path, "d.jsonl", '{"text": "a", "label": 1}\n{"text": \n')
    with pytest.raises(DataError, match=r"d.jsonl:2: not valid JSON"):
        read_rows(DataSource(path=str(path)), "classification")


def test_tokens_and_tags_of_different_length_is_an_error(tmp_path):
    path = write(tmp_path, "d.jsonl", json.dumps({"tokens": ["a", "b"], "tags": ["O"]}) + "\n")
    with pytest.raises(DataError, match=r"d.jsonl:1: 2 tokens but 1 tags"):
        read_rows(DataSource(path=str(path)), "tagging")


def test_parquet_rows(tmp_path):
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"text": ["good", "bad"], "label": [1, 0]}), path)
    rows = read_rows(DataSource(path=str(path)), "classification")
    assert [(row["text"], row["label"]) for row in rows] == [("good", "1"), ("bad", "0")]


def test_tagging_rows_from_entity_spans_as_the_label_job_writes_them(tmp_path):
    text = "  EU rejects German call, says Peter Blackburn's office."
    entities = [{"start": 2, "end": 4, "label": "ORG", "text": "EU", "score": 0.9},
                {"start": 13, "end": 19, "label": "MISC", "text": "German", "score": 0.8},
                {"start": 31, "end": 46, "label": "PER", "text": "Peter Blackburn", "score": 0.7}]
    path = tmp_path / "labeled.parquet"
    pq.write_table(pa.table({"text": [text], "ner": [entities]}), path)
    row = read_rows(DataSource(path=str(path), spans_column="ner"), "tagging")[0]
    assert row["tokens"] == ["EU", "rejects", "German", "call", ",", "says", "Peter", "Blackburn", "'", "s",
                             "office", "."]
    assert row["tags"] == ["B-ORG", "O", "B-MISC", "O", "O", "O", "B-PER", "I-PER", "O", "O", "O", "O"]


def test_a_span_that_is_not_start_end_label_names_the_row(tmp_path):
    path = write(tmp_path, "d.jsonl", json.dumps({"text": "Hi Bob", "ner": [{"start": 3, "label": "PER"}]}) + "\n")
    with pytest.raises(DataError, match=r"d.jsonl:1: spans_column 'ner': .* is not \{start, end, label\}"):
        read_rows(DataSource(path=str(path), spans_column="ner"), "tagging")


def test_unlabeled_rows_are_refused_unless_skipped(tmp_path):
    rows = [{"text": "good", "label": "1", "ner": []}, {"text": "the teacher failed here", "label": None, "ner": None}]
    path = tmp_path / "labeled.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    with pytest.raises(DataError, match=r"labeled.parquet:row 2: label_column 'label' is empty"):
        read_rows(DataSource(path=str(path)), "classification")
    assert [row["text"] for row in read_rows(DataSource(path=str(path), skip_unlabeled=True),
                                             "classification")] == ["good"]
    tagged = read_rows(DataSource(path=str(path), spans_column="ner", skip_unlabeled=True), "tagging")
    assert [(row["tokens"], row["tags"]) for row in tagged] == [(["good"], ["O"])]


def test_demo_data_reads_for_both_tasks():
    sentiment = read_rows(DataSource(path=str(DEMO / "train.jsonl"), label_column="sentiment"), "classification")
    ner = read_rows(DataSource(path=str(DEMO / "train.jsonl")), "tagging")
    assert len(sentiment) == len(ner) == 400
    assert {row["label"] for row in sentiment} == {"positive", "negative"}


@pytest.mark.real_data
def test_real_conll2003_and_its_iob1_original_agree():
    iob2 = read_rows(DataSource(path=str(shared_data("conll2003/train.txt"))), "tagging")
    iob1 = read_rows(DataSource(path=str(shared_data("conll2003_iob1/eng.train")), scheme="iob1"), "tagging")
    assert len(iob2) == len(iob1) == 14041
    assert [row["tags"] for row in iob1] == [row["tags"] for row in iob2]


@pytest.mark.real_data
@pytest.mark.parametrize("relative,source,kind,count", [
    ("sst2/train.tsv", {"text_column": "sentence"}, "classification", 67349),
    ("banking77/train.csv", {"label_column": "category"}, "classification", 10003),
    ("wnut17/wnut17train.conll", {}, "tagging", 3394),
])
def test_real_data_sets_read_completely(relative, source, kind, count):
    rows = read_rows(DataSource(path=str(shared_data(relative)), **source), kind)
    assert len(rows) == count
