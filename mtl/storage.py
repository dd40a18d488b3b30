"""Every path the project reads or writes: a local path or a URI (``s3://``, ``gs://``, ``abfs://``,
``file://``), behind pyarrow filesystems.

Paths stay strings in the form the user gave them (``s3://bucket/run/best``), and are joined with
``join``, never with ``pathlib`` (which turns ``s3://b`` into ``s3:/b``). pyarrow serves the schemes
it knows (local, S3, GCS, HDFS, Azure); any other scheme goes through fsspec when its package is
installed. S3 credentials and endpoint come from the usual AWS variables (``AWS_ENDPOINT_URL`` for an
S3-compatible server).

Model folders and pretrained encoders on object storage are fetched once per node into a local
cache keyed by their version (``cached_model_folder``, ``cached_folder``), since Hugging Face
loaders read local files only.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import BinaryIO

import pyarrow.fs as pafs

CACHE_ENV = "MTL_CACHE_DIR"


def is_uri(path: str | os.PathLike) -> bool:
    """True for ``scheme://...`` (``file://`` included), False for a plain local path."""
    return "://" in str(path)


def is_local(path: str | os.PathLike) -> bool:
    """True when ``path`` names this machine's own disk (a plain path or ``file://``)."""
    return not is_uri(path) or str(path).startswith("file://")


def resolve(path: str | os.PathLike) -> tuple[pafs.FileSystem, str]:
    """The filesystem that holds ``path`` and the path inside it (``bucket/key`` for S3)."""
    text = str(path)
    if not is_uri(text):
        return pafs.LocalFileSystem(), str(Path(text).absolute())
    try:
        return pafs.FileSystem.from_uri(text)
    except ValueError as error:  # pyarrow's ArrowInvalid: a scheme it has no filesystem for
        if "Unrecognized filesystem type" not in str(error):
            raise
    return _fsspec_filesystem(text)


def _fsspec_filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    import fsspec

    filesystem, inner = fsspec.core.url_to_fs(uri)
    return pafs.PyFileSystem(pafs.FSSpecHandler(filesystem)), inner


def join(base: str | os.PathLike, *parts: str) -> str:
    """``base/part/...`` for a local path or a URI, with no doubled or lost slashes."""
    text = str(base)
    if not is_uri(text):
        return str(Path(text, *parts))
    return "/".join([text.rstrip("/"), *(part.strip("/") for part in parts)])


def absolute(path: str | os.PathLike) -> str:
    """A URI as it is; a local path made absolute (a job may run in another folder than its caller)."""
    return str(path) if is_uri(path) else str(Path(path).absolute())


def is_hidden(relative: str | os.PathLike) -> bool:
    """Whether readers skip this path below a folder: a part of it starts with ``_`` or ``.``
    (``_SUCCESS``, staging folders, ``.DS_Store``), as Spark, Ray Data and pyarrow skip them."""
    return any(part.startswith(("_", ".")) for part in str(relative).split("/") if part)


def name(path: str | os.PathLike) -> str:
    """The last part of a path or URI."""
    return str(path).rstrip("/").rsplit("/", 1)[-1]


def exists(path: str | os.PathLike) -> bool:
    filesystem, inner = resolve(path)
    return filesystem.get_file_info(inner).type != pafs.FileType.NotFound


def is_file(path: str | os.PathLike) -> bool:
    filesystem, inner = resolve(path)
    return filesystem.get_file_info(inner).type == pafs.FileType.File


def open_binary(path: str | os.PathLike) -> BinaryIO:
    """A readable binary stream; raises FileNotFoundError naming ``path``."""
    filesystem, inner = resolve(path)
    if filesystem.get_file_info(inner).type != pafs.FileType.File:
        raise FileNotFoundError(f"no such file '{path}'")
    return filesystem.open_input_file(inner)


def read_bytes(path: str | os.PathLike) -> bytes:
    with open_binary(path) as stream:
        return stream.read()


def read_text(path: str | os.PathLike) -> str:
    return read_bytes(path).decode("utf-8")


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write a whole file; on object storage a file appears whole or not at all. Local writes go to
    a temporary name first and are renamed into place, for the same guarantee."""
    filesystem, inner = resolve(path)
    if isinstance(filesystem, pafs.LocalFileSystem):
        Path(inner).parent.mkdir(parents=True, exist_ok=True)
        temporary = f"{inner}.{uuid.uuid4().hex}.tmp"
        Path(temporary).write_bytes(data)
        os.replace(temporary, inner)
        return
    with filesystem.open_output_stream(inner) as stream:
        stream.write(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def list_files(folder: str | os.PathLike, *, recursive: bool = False, relative: bool = False) -> list[str]:
    """Every file under ``folder`` (sorted), each as a full path in the form ``folder`` was given, or
    relative to ``folder`` (``a/b.txt``) with ``relative``; an absent folder has none."""
    filesystem, inner = resolve(folder)
    selector = pafs.FileSelector(inner, recursive=recursive, allow_not_found=True)
    found = sorted(info.path[len(inner):].lstrip("/") for info in filesystem.get_file_info(selector)
                   if info.type == pafs.FileType.File)
    return found if relative else [join(folder, entry) for entry in found]


def delete_file(path: str | os.PathLike) -> None:
    """Remove one file; an absent file is not an error."""
    filesystem, inner = resolve(path)
    if filesystem.get_file_info(inner).type == pafs.FileType.File:
        filesystem.delete_file(inner)


def delete_folder(path: str | os.PathLike) -> None:
    """Remove a folder this project wrote, with everything in it; an absent folder is not an error."""
    filesystem, inner = resolve(path)
    if filesystem.get_file_info(inner).type == pafs.FileType.Directory:
        filesystem.delete_dir(inner)


def move(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Rename a file; on object storage, a server-side copy then a delete."""
    filesystem, source_inner = resolve(source)
    target_filesystem, target_inner = resolve(target)
    if type(filesystem) is not type(target_filesystem):
        raise ValueError(f"cannot move '{source}' to '{target}': not the same storage")
    if isinstance(filesystem, pafs.LocalFileSystem):  # object stores have no folders to make
        Path(target_inner).parent.mkdir(parents=True, exist_ok=True)
    filesystem.move(source_inner, target_inner)


def upload_folder(local: str | os.PathLike, target: str | os.PathLike, *, last: str | None = None) -> None:
    """Copy a local folder's files to ``target`` (local or URI), ``last`` after all the others.

    Writing the file that marks a folder complete (a model folder's ``mtl.json``) last means a reader
    never takes a half-copied folder for a whole one.
    """
    files = sorted(path for path in Path(local).rglob("*") if path.is_file())
    files.sort(key=lambda path: path.name == last)
    for path in files:
        write_bytes(join(target, *path.relative_to(local).parts), path.read_bytes())


def replace_folder(local: str | os.PathLike, target: str | os.PathLike, *, last: str) -> None:
    """Put a local folder at ``target`` in place of what was there (a folder this project wrote).

    Locally the copy is renamed into place, whole or not at all. Object storage has no rename: the
    old folder's ``last`` file goes first, so that it stops reading as complete, and the new one's last.
    """
    filesystem, inner = resolve(target)
    if isinstance(filesystem, pafs.LocalFileSystem):
        staging = Path(f"{inner}.partial")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(local, staging)
        shutil.rmtree(inner, ignore_errors=True)
        staging.rename(inner)
        return
    delete_file(join(target, last))
    delete_folder(target)
    upload_folder(local, target, last=last)


def download_folder(source: str | os.PathLike, local: str | os.PathLike) -> None:
    """Copy every file under ``source`` into the local folder ``local`` (in parallel, in large reads)."""
    filesystem, inner = resolve(source)
    Path(local).mkdir(parents=True, exist_ok=True)
    pafs.copy_files(inner, str(Path(local).absolute()), source_filesystem=filesystem,
                    destination_filesystem=pafs.LocalFileSystem(), chunk_size=8 * 1024**2)


def cache_root() -> Path:
    """Where remote model folders are cached on this node: ``$MTL_CACHE_DIR``, else ~/.cache/mtl."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "mtl")


def cached_model_folder(folder: str | os.PathLike, version_files: tuple[str, ...]) -> Path:
    """A local copy of a remote model folder, fetched once per node and version.

    The version is a hash of ``version_files`` (the task description and head weights, which change
    with every trained model), so a retrained model at the same URI is fetched again while replicas
    and labeling actors on one node share one copy.
    """
    if is_local(folder):
        return Path(resolve(folder)[1])
    digest = hashlib.sha256()
    for part in version_files:
        digest.update(read_bytes(join(folder, part)))
    return _fetched_once(folder, digest.hexdigest()[:16])


def cached_folder(folder: str | os.PathLike) -> Path:
    """A local copy of any remote folder (a pretrained encoder on object storage), fetched once per
    node and version. The version is the folder's URI and every file's name, size and modification
    time, so a folder rewritten in place is fetched again without reading its weights to tell."""
    if is_local(folder):
        return Path(resolve(folder)[1])
    filesystem, inner = resolve(folder)
    infos = filesystem.get_file_info(pafs.FileSelector(inner, recursive=True, allow_not_found=True))
    files = sorted((info.path, info.size, str(info.mtime)) for info in infos if info.type == pafs.FileType.File)
    if not files:
        raise FileNotFoundError(f"no files under '{folder}'")
    digest = hashlib.sha256(repr((str(folder), files)).encode())
    return _fetched_once(folder, digest.hexdigest()[:16])


def _fetched_once(folder: str | os.PathLike, version: str) -> Path:
    """``folder`` in this node's cache under ``version``, downloaded unless it is there already.

    The copy is downloaded beside its final place and renamed into it, so a reader never sees half
    a folder, even with several processes racing."""
    target = cache_root() / "models" / version
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        download_folder(folder, staging)
        try:
            staging.rename(target)
        except OSError:  # another process on this node finished first: use its copy
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
