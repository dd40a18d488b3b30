"""The Ray edge of evaluation: every prediction of an evaluation on one Ray Data actor pool.

The eval rows are read on the driver (by the training readers, so that a bad row is named by file
and line before any actor starts) and handed to Ray Data as JSON, one item per row; each actor loads
the model once and answers the rows of every request it is given. Only the small per-row outcomes
come back to the driver, where the metrics and their intervals are computed.
"""

from __future__ import annotations

import json

import numpy as np
import ray.data
from ray.data import ActorPoolStrategy

from mtl.evaluation.outcomes import predict_outcomes
from mtl.evaluation.run import Request, Scorer
from mtl.inference.predictor import Predictor


class _OutcomeActor:
    """Loads the model once; answers batches of serialized rows of any task."""

    def __init__(self, *, model: str, backend: str, precision: str, batch_size: int, threads: int | None):
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.predictor = Predictor.from_folder(model, backend=backend, precision=precision, batch_size=batch_size)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        groups: dict[tuple[str, str], list[int]] = {}
        for position, (task, kind) in enumerate(zip(batch["task"], batch["kind"])):
            groups.setdefault((str(task), str(kind)), []).append(position)
        outcomes: list[str | None] = [None] * len(batch["row"])
        for (task, kind), positions in groups.items():
            rows = [json.loads(batch["row"][position]) for position in positions]
            for position, outcome in zip(positions, predict_outcomes(self.predictor, task, kind, rows)):
                outcomes[position] = json.dumps(outcome)
        return {"request": batch["request"], "index": batch["index"], "outcome": outcomes}


def ray_scorer(model: str, *, actors: int, backend: str = "torch", precision: str = "float32",
               batch_size: int = 64, rows_per_batch: int = 512, threads: int | None = None) -> Scorer:
    """A scorer that predicts on ``actors`` Ray actors, each with ``threads`` torch threads."""

    def score(requests: list[Request]) -> list[list[dict]]:
        items = [{"request": number, "index": index, "task": task, "kind": kind, "row": json.dumps(row)}
                 for number, (task, kind, rows) in enumerate(requests) for index, row in enumerate(rows)]
        dataset = ray.data.from_items(items).map_batches(
            _OutcomeActor, batch_size=rows_per_batch, compute=ActorPoolStrategy(size=actors),
            fn_constructor_kwargs={"model": model, "backend": backend, "precision": precision,
                                   "batch_size": batch_size, "threads": threads})
        results: list[list[dict | None]] = [[None] * len(rows) for _, _, rows in requests]
        for row in dataset.iter_rows():
            results[int(row["request"])][int(row["index"])] = json.loads(row["outcome"])
        return results

    return score
