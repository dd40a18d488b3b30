"""Online load: the Ray Serve endpoint against a plain FastAPI + SentenceTransformer.encode app, in one run.

    python benchmarks/serve_load.py [--requests 400] [--concurrency 1 8 32] [--texts-per-request 1]

Each server runs alone, in its own process, on 127.0.0.1: first the baseline (FastAPI, one
``SentenceTransformer.encode`` per request, no batching, on every core), then the endpoint:
`serve run` of the shipped serve_config.yaml, with only its model and port rewritten, in each of
``--modes``: ``shipped`` (the file as it is, nothing exported: its ``controller_options`` turn on
Ray Serve's high-throughput mode, HAProxy forwarding straight to each replica's own HTTP server)
and ``python-proxy`` (the same file without ``controller_options``: Serve's default mode, every
request through Serve's Python proxy and two actor calls).
``--replicas``, ``--threads``, ``--backend`` and ``--precision`` rewrite the config for tuned rows.
A separate load process sends a bounded number of ``/embed`` requests at each concurrency and
reports requests/s, sentences/s and p50/p95/p99 latency. Every request of a server's run is a
different real sentence (SST-2 train), so the endpoint's answer cache is never hit.
"""

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager, suppress
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def sentences(offset: int, count: int) -> list[str]:
    """Distinct real SST-2 sentences ``offset`` to ``offset + count`` when ../shared/data is there,
    else the bundled demo corpus (which repeats)."""
    path = SHARED / "sst2" / "train.tsv"
    if path.exists():
        lines = list(dict.fromkeys(line.split("\t")[0] for line in path.read_text().splitlines()[1:]))
    else:
        lines = (REPO / "data" / "demo" / "corpus.txt").read_text().splitlines()
    return [lines[index % len(lines)] for index in range(offset, offset + count)]


def baseline_app(port: int) -> None:
    """The baseline server: FastAPI calling SentenceTransformer.encode once per request."""
    import uvicorn
    from fastapi import FastAPI
    from pydantic import BaseModel
    from sentence_transformers import SentenceTransformer

    from mtl.inference.model_folder import resolve_encoder

    model = SentenceTransformer(resolve_encoder("all-MiniLM-L6-v2"), device="cpu")
    app = FastAPI()

    class Texts(BaseModel):
        texts: list[str]

    @app.post("/v1/embed")
    def embed(request: Texts) -> dict:
        return {"embeddings": model.encode(request.texts).tolist()}

    @app.get("/healthz")
    def health() -> dict:
        return {"status": "ok"}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


async def load(url: str, concurrency: int, total: int, texts: list[str], per_request: int) -> dict:
    """Send ``total`` requests from ``concurrency`` clients; latencies in milliseconds."""
    import aiohttp

    latencies, codes, queue = [], [], asyncio.Queue()
    for index in range(total):
        queue.put_nowait(texts[index * per_request:(index + 1) * per_request])

    async def client(session) -> None:
        while not queue.empty():
            body = {"texts": queue.get_nowait()}
            started = time.perf_counter()
            async with session.post(f"{url}/v1/embed", json=body) as response:
                await response.read()
                codes.append(response.status)
            latencies.append((time.perf_counter() - started) * 1000)

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
        seconds = time.perf_counter() - started
    latencies.sort()
    return {"requests_per_s": total / seconds, "sentences_per_s": total * per_request / seconds,
            "p50": latencies[len(latencies) // 2], "p95": latencies[int(len(latencies) * 0.95)],
            "p99": latencies[int(len(latencies) * 0.99)], "errors": sum(code != 200 for code in codes)}


def run_load(url: str, args: argparse.Namespace) -> dict[int, dict]:
    """Each concurrency level from a separate load process, after a warm-up round."""

    offsets = iter(range(0, 10**9, args.requests * args.texts_per_request))

    def one_level(concurrency: int, requests: int) -> dict:
        done = subprocess.run([sys.executable, __file__, "--load", url, "--concurrency", str(concurrency),
                               "--requests", str(requests), "--texts-per-request", str(args.texts_per_request),
                               "--offset", str(next(offsets))], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"the load at concurrency {concurrency} against {url} failed:\n{done.stderr[-3000:]}")
        return json.loads(done.stdout)

    one_level(8, 50)
    return {concurrency: one_level(concurrency, args.requests) for concurrency in args.concurrency}


@contextmanager
def server(command: list[str], url: str, environment: dict | None = None):
    """Start a server process group, wait for /healthz, and always stop it."""
    with tempfile.TemporaryFile(mode="w+") as log:
        process = subprocess.Popen(command, cwd=REPO, env={**os.environ, **(environment or {})},
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_until_healthy(url, log, command[0])
            yield
        finally:
            os.killpg(process.pid, signal.SIGINT)  # `serve run` shuts Serve and Ray down on Ctrl-C
            with suppress(subprocess.TimeoutExpired):
                process.wait(timeout=60)
            # HAProxy can outlive `serve run` and keep the port: end whatever of the group is left
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)


def wait_until_healthy(url: str, log, name: str) -> None:
    import requests

    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            if requests.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            time.sleep(0.5)
    log.seek(0)
    raise RuntimeError(f"{name} did not become healthy; its last output:\n{log.read()[-3000:]}")


def endpoint_config(model: Path, port: int, folder: Path, tuning: dict, mode: str) -> Path:
    """The shipped serve_config.yaml on this model and port, with ``tuning`` (the tuning flags
    given) on top, for ``mode``, written into ``folder``."""
    import yaml

    config = yaml.safe_load((REPO / "serve_config.yaml").read_text())
    config["http_options"]["port"] = port
    if mode == "python-proxy":
        del config["controller_options"]
    application = config["applications"][0]
    application["args"]["model"] = str(model)
    application["args"].update({name: value for name, value in tuning.items() if name != "replicas"})
    if "replicas" in tuning:
        deployment = application["deployments"][0]
        deployment.pop("autoscaling_config", None)
        deployment.update(num_replicas=tuning["replicas"],
                          ray_actor_options={"num_cpus": min(1.0, (os.cpu_count() or 1) / tuning["replicas"])})
    path = folder / f"serve_config_{mode}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def mode_environment(mode: str, folder: Path) -> dict[str, str]:
    """What the `serve run` process gets besides the machine's environment: HAProxy's files go to
    ``folder`` rather than /tmp/haproxy-serve, so that the run cleans up after itself."""
    from mtl.serving.haproxy import haproxy_file_locations

    (folder / "haproxy").mkdir(exist_ok=True)
    return {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
            **(haproxy_file_locations(str(folder / "haproxy")) if mode == "shipped" else {})}


def print_table(baseline: dict, endpoints: dict[str, dict], per_request: int, config: str) -> None:
    print(f"\n{per_request} sentence(s) per request, {os.cpu_count()} cores, loopback; endpoint: {config}")
    columns = ("req/s", "sent/s", "p50 ms", "p95 ms", "p99 ms")
    print(f"{'server':<24} {'conc':>4} " + " ".join(f"{name:>8}" for name in columns) + f" {'errors':>6}")
    for name, results in (("baseline", baseline), *((f"endpoint {mode}", rows) for mode, rows in endpoints.items())):
        for concurrency, row in results.items():
            print(f"{name:<24} {concurrency:>4} {row['requests_per_s']:>8.1f} {row['sentences_per_s']:>8.1f} "
                  f"{row['p50']:>8.1f} {row['p95']:>8.1f} {row['p99']:>8.1f} {row['errors']:>6}")
    top = max(baseline)
    for mode, endpoint in endpoints.items():
        print(f"{mode}: sentences/s at concurrency {top}, endpoint / baseline = "
              f"{endpoint[top]['sentences_per_s'] / baseline[top]['sentences_per_s']:.2f}"
              f"{' (target >= 3)' if mode == 'shipped' else ''}; "
              f"p50 at concurrency 1, endpoint / baseline = {endpoint[1]['p50'] / baseline[1]['p50']:.2f}"
              f"{' (target <= 1.0)' if mode == 'shipped' else ''}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400, help="requests per concurrency level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--texts-per-request", type=int, default=1)
    parser.add_argument("--model", help="model folder (default: MiniLM with fresh demo heads)")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--modes", nargs="+", default=["shipped", "python-proxy"],
                        choices=["shipped", "python-proxy"])
    parser.add_argument("--replicas", type=int, help="tuned: this many fixed endpoint replicas sharing the cores")
    parser.add_argument("--threads", type=int, help="tuned: threads per replica")
    parser.add_argument("--backend", choices=["torch", "onnx"], help="tuned: the replicas' backend")
    parser.add_argument("--precision", choices=["float32", "bfloat16", "int8"], help="tuned: the replicas' precision")
    parser.add_argument("--load", help=argparse.SUPPRESS)
    parser.add_argument("--offset", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--baseline-server", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_server:
        return baseline_app(args.baseline_server)
    if args.load:
        texts = sentences(args.offset, args.requests * args.texts_per_request)
        result = asyncio.run(load(args.load, args.concurrency[0], args.requests, texts, args.texts_per_request))
        print(json.dumps(result))
        return None
    url = f"http://127.0.0.1:{args.port}"
    tuning = {name: getattr(args, name) for name in ("replicas", "threads", "backend", "precision")
              if getattr(args, name)}
    with tempfile.TemporaryDirectory() as work:
        model = Path(args.model) if args.model else fresh_model(Path(work) / "model")
        configs = {mode: endpoint_config(model.absolute(), args.port, Path(work), tuning, mode) for mode in args.modes}
        if tuning.get("backend") == "onnx":
            export_if_missing(model)
        with server([sys.executable, __file__, "--baseline-server", str(args.port)], url):
            baseline = run_load(url, args)
        endpoints = {}
        for mode, config in configs.items():
            with server([str(Path(sys.executable).parent / "serve"), "run", str(config)], url,
                        mode_environment(mode, Path(work))):
                endpoints[mode] = run_load(url, args)
            print(json.dumps({mode: endpoints[mode]}), flush=True)  # kept if a later mode fails
    print_table(baseline, endpoints, args.texts_per_request,
                "serve_config.yaml as shipped" + (f", tuned: {tuning}" if tuning else ""))


def export_if_missing(model: Path) -> None:
    from mtl.inference.export import export_onnx
    from mtl.inference.onnx_backend import EXPORT_FILE

    if not (model / EXPORT_FILE).is_file():
        export_onnx(model)


def fresh_model(folder: Path) -> Path:
    from mtl.config import ModelConfig
    from mtl.inference.model_folder import build_model, save_model_folder
    from mtl.tasks import TaskSpec

    specs = [TaskSpec("sentiment", "classification", ("0", "1")),
             TaskSpec("ner", "tagging", ("O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"))]
    return save_model_folder(build_model(ModelConfig(), specs), folder)


if __name__ == "__main__":
    main()
