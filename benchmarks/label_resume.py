"""How much a label job killed late redoes when run again: S3 in, S3 out, the driver SIGKILLed.

    python benchmarks/label_resume.py --model runs/demo/best [--rows 20000] [--kill-at 0.9]

Starts an S3-compatible server (moto) on 127.0.0.1, uploads a corpus of distinct sentences (the
demo corpus with a running number), runs `python -m jobs.label` from S3 to S3, kills the driver with
SIGKILL once the rows written reach ``--kill-at`` of the corpus, runs the same command again, and
prints the rows the rerun labeled against the corpus, the time of each run, and whether the final
output holds every row exactly once. The baseline is the corpus itself: a job that restarted from
nothing would label all of it again.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.dataset as pads
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from mtl import storage  # noqa: E402

BUCKET = "s3://resume"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_s3() -> object:
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    os.environ.update({"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "bench",
                       "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
                       "AWS_EC2_METADATA_DISABLED": "true"})
    boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"]).create_bucket(Bucket=BUCKET[5:])
    return server


def rows_written(folder: str) -> int:
    total = 0
    for path in storage.list_files(folder):
        # a file still being written has no footer yet: it counts once it is whole
        with contextlib.suppress(OSError, ValueError), storage.open_binary(path) as stream:
            total += pq.ParquetFile(stream).metadata.num_rows if path.endswith(".parquet") else 0
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a model folder (copied to S3 first)")
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--kill-at", type=float, default=0.9, help="fraction of rows written before the kill")
    args = parser.parse_args()
    server = start_s3()
    try:
        storage.upload_folder(args.model, f"{BUCKET}/model", last="mtl.json")
        base = (REPO / "data" / "demo" / "corpus.txt").read_text().splitlines()
        lines = [f"{base[index % len(base)]} ({index})" for index in range(args.rows)]
        per_file = -(-args.rows // args.files)
        for part in range(args.files):
            storage.write_text(f"{BUCKET}/corpus/part-{part:02d}.txt",
                               "\n".join(lines[part * per_file:(part + 1) * per_file]) + "\n")
        command = [sys.executable, "-m", "jobs.label", "--model", f"{BUCKET}/model", "--input", f"{BUCKET}/corpus/",
                   "--output", f"{BUCKET}/labels"]
        environment = {**os.environ, "RAY_ADDRESS": "local"}
        started = time.perf_counter()
        first = subprocess.Popen(command, cwd=REPO, env=environment,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while rows_written(f"{BUCKET}/labels/_mtl_staging/data") < args.kill_at * args.rows:
            if first.poll() is not None:
                print("the first run finished before it could be killed; lower --kill-at")
                return 1
            time.sleep(0.5)
        first.send_signal(signal.SIGKILL)
        first.wait()
        killed_after = time.perf_counter() - started
        started = time.perf_counter()
        rerun = subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True)
        rerun_seconds = time.perf_counter() - started
        print(rerun.stdout.strip().splitlines()[-1] if rerun.stdout.strip() else rerun.stderr[-2000:])
        filesystem, path = storage.resolve(f"{BUCKET}/labels")
        table = pads.dataset(path, filesystem=filesystem, format="parquet").to_table(columns=["row_id"])
        ids = table.column("row_id").to_pylist()
        labeled_again = int(rerun.stdout.split("labeled ")[1].split()[0]) if "labeled " in rerun.stdout else -1
        print(f"corpus: {args.rows} rows in {args.files} files on S3; first run killed after {killed_after:.1f}s")
        print(f"rerun: labeled {labeled_again} rows in {rerun_seconds:.1f}s "
              f"(a restart from nothing labels {args.rows})")
        print(f"ratio (rows labeled by the rerun / corpus): {labeled_again / args.rows:.3f}")
        print(f"output: {len(ids)} rows, {len(set(ids))} distinct row ids")
        return 0 if len(ids) == len(set(ids)) == args.rows else 1
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
