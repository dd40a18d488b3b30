import pytest
import yaml
from conftest import REPO

from mtl.config import load_config, validate_config
from mtl.errors import ConfigError
from mtl.task_config import DataSource
from mtl.train.tuning import load_space

CONFIG = """
output: runs/x
model: {encoder: all-MiniLM-L6-v2, max_length: 64}
tasks:
  - name: sentiment
    kind: classification
    train: {path: data/demo/train.jsonl, label_column: sentiment}
  - name: ner
    kind: tagging
    train: {path: data/demo/train.jsonl}
"""


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG)
    return path


def test_load_config_reads_tasks_and_model(config_file):
    config = load_config(config_file)
    assert [task.name for task in config.tasks] == ["sentiment", "ner"]
    assert config.model.max_length == 64
    assert config.model.pooling == "mean"


def test_overrides_set_nested_fields_and_list_items(config_file):
    config = load_config(config_file, ["model.pooling=cls", "tasks.1.name=entities", "output=elsewhere"])
    assert config.model.pooling == "cls"
    assert config.tasks[1].name == "entities"
    assert config.output == "elsewhere"


def test_unknown_key_is_an_error_naming_the_field(config_file):
    with pytest.raises(ConfigError, match=r"model\.poolin"):
        load_config(config_file, ["model.poolin=cls"])


def test_unknown_task_kind_names_the_task(config_file):
    with pytest.raises(ConfigError, match=r"tasks\.0\.kind"):
        load_config(config_file, ["tasks.0.kind=regression"])


def test_override_of_missing_list_item_is_an_error(config_file):
    with pytest.raises(ConfigError, match="no list item '5'"):
        load_config(config_file, ["tasks.5.name=x"])


def test_malformed_override_is_an_error(config_file):
    with pytest.raises(ConfigError, match="expected key.sub=value"):
        load_config(config_file, ["model.pooling"])


def test_duplicate_task_names_are_an_error(config_file):
    with pytest.raises(ConfigError, match="unique"):
        load_config(config_file, ["tasks.1.name=sentiment"])


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "absent.yaml")


def test_format_is_inferred_from_suffix_or_must_be_given():
    assert DataSource(path="a/train.tsv").format_of() == "tsv"
    assert DataSource(path="eng.testa").format_of() == "conll"
    assert DataSource(path="shards").format_of("shards/part-0.jsonl") == "jsonl"  # a folder: each file's own
    with pytest.raises(ConfigError, match="set format"):
        _ = DataSource(path="data.xyz").format_of()


def test_local_checkpoints_are_refused_on_several_nodes_unless_shared():
    from mtl.train.trainer import checkpoint_storage

    raw = {"output": "runs/x", "tasks": [{"name": "a", "kind": "classification", "train": {"path": "t.tsv"}}]}
    with pytest.raises(ConfigError, match=r"storage_path: '.*runs/x/ray' is a local path, and this cluster has 2"):
        checkpoint_storage(validate_config(raw), nodes=2)
    assert checkpoint_storage(validate_config({**raw, "output": "s3://b/run"}), nodes=2) == "s3://b/run/ray"
    shared = validate_config({**raw, "train": {"storage_path": "/nfs/ckpt", "storage_shared": True}})
    assert checkpoint_storage(shared, nodes=2) == "/nfs/ckpt"
    assert checkpoint_storage(validate_config(raw), nodes=1).endswith("runs/x/ray")


RUN_CONFIGS = sorted(path for path in (REPO / "jobs" / "configs").glob("*.yaml") if path.name != "tune_space.yaml")


@pytest.mark.parametrize("path", RUN_CONFIGS, ids=lambda path: path.name)
def test_every_shipped_run_config_loads_and_names_its_launch_command(path):
    config = load_config(path)
    assert config.tasks and config.output
    assert "python -m jobs." in path.read_text().split("\n\n")[0], f"{path.name} names no launch command"


def test_the_shipped_search_space_loads_over_the_config_it_names():
    space_file = REPO / "jobs" / "configs" / "tune_space.yaml"
    base = yaml.safe_load((REPO / "jobs" / "configs" / "demo.yaml").read_text())
    space = load_space(space_file, base)
    assert "train.learning_rate" in space.space
