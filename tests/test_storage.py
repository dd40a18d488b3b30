"""mtl.storage on a local folder and on a real S3-compatible server: the same calls, the same results."""

import pytest
from conftest import s3_keys

from mtl import storage


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "root")
    return request.getfixturevalue("bucket") + "/root"


def test_join_keeps_uri_schemes_and_local_paths():
    assert storage.join("s3://bucket/run/", "best", "mtl.json") == "s3://bucket/run/best/mtl.json"
    assert storage.join("gs://b", "/x/") == "gs://b/x"
    assert storage.join("runs/demo", "best") == "runs/demo/best"
    assert storage.name("s3://bucket/run/best/") == "best"
    assert storage.is_local("file:///tmp/x") and storage.is_local("runs/x") and not storage.is_local("s3://b/x")


def test_write_read_list_move_delete_round_trip(root):
    storage.write_text(storage.join(root, "a.txt"), "alpha\n")
    storage.write_bytes(storage.join(root, "sub", "b.bin"), b"\x00\x01")
    assert storage.read_text(storage.join(root, "a.txt")) == "alpha\n"
    assert storage.list_files(root) == [storage.join(root, "a.txt")]
    assert storage.list_files(root, recursive=True) == [storage.join(root, "a.txt"), storage.join(root, "sub", "b.bin")]
    storage.move(storage.join(root, "sub", "b.bin"), storage.join(root, "c.bin"))
    assert storage.read_bytes(storage.join(root, "c.bin")) == b"\x00\x01"
    assert not storage.exists(storage.join(root, "sub", "b.bin"))
    storage.delete_file(storage.join(root, "a.txt"))
    storage.delete_file(storage.join(root, "a.txt"))  # already gone: no error
    assert storage.list_files(root, recursive=True) == [storage.join(root, "c.bin")]
    assert storage.list_files(storage.join(root, "absent")) == []


def test_open_binary_keeps_bytes_as_written_and_names_a_missing_file(root):
    storage.write_bytes(storage.join(root, "crlf.csv"), b"a,b\r\n1,2\r\n")
    with storage.open_binary(storage.join(root, "crlf.csv")) as handle:
        assert handle.read() == b"a,b\r\n1,2\r\n"
    with pytest.raises(FileNotFoundError, match="absent.csv"):
        storage.open_binary(storage.join(root, "absent.csv"))


def test_upload_writes_the_marker_file_last_and_download_copies_back(root, tmp_path):
    local = tmp_path / "folder"
    (local / "nested").mkdir(parents=True)
    for name in ("mtl.json", "a.safetensors", "nested/c.txt"):
        (local / name).write_text(name)
    order = []
    original = storage.write_bytes
    storage.write_bytes = lambda path, data: (order.append(storage.name(path)), original(path, data))
    try:
        storage.upload_folder(local, storage.join(root, "model"), last="mtl.json")
    finally:
        storage.write_bytes = original
    assert order[-1] == "mtl.json" and sorted(order) == ["a.safetensors", "c.txt", "mtl.json"]
    storage.download_folder(storage.join(root, "model"), tmp_path / "back")
    assert (tmp_path / "back" / "nested" / "c.txt").read_text() == "nested/c.txt"


def test_remote_model_folder_is_fetched_once_per_version(bucket, tmp_path, model_cache):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "mtl.json").write_text("{}")
    (folder / "heads.safetensors").write_bytes(b"v1")
    storage.upload_folder(folder, f"{bucket}/model")
    first = storage.cached_model_folder(f"{bucket}/model", ("mtl.json", "heads.safetensors"))
    assert first.parent.parent == model_cache and (first / "heads.safetensors").read_bytes() == b"v1"
    assert storage.cached_model_folder(f"{bucket}/model", ("mtl.json", "heads.safetensors")) == first
    storage.write_bytes(f"{bucket}/model/heads.safetensors", b"v2")  # retrained at the same URI
    second = storage.cached_model_folder(f"{bucket}/model", ("mtl.json", "heads.safetensors"))
    assert second != first and (second / "heads.safetensors").read_bytes() == b"v2"
    assert s3_keys(bucket) == ["model/heads.safetensors", "model/mtl.json"]
