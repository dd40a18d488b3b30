"""THE Predictor: one model folder loaded once; batches of texts (or word lists) in, answers out.

Bulk labeling and the online endpoint both call ``Predictor.predict``, so they give the same answer
for the same text. A bad item (empty, not a string, too long) gets its own ``error`` and never
fails the batch it came in.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mtl.data.features import Encoded, Featurizer
from mtl.inference.answers import Prediction, entity_spans, sentence_label, softmax
from mtl.inference.model_folder import ModelBundle, load_model_folder, load_model_parts, model_version
from mtl.inference.onnx_backend import OnnxMultiTaskModel, check_onnx_precision, exported_file, load_onnx_model
from mtl.tasks import TaskSpec

if TYPE_CHECKING:
    import torch

    from mtl.model.multitask import MultiTaskModel

DEFAULT_MAX_CHARS = 20_000
BACKENDS = ("torch", "onnx")
TORCH_PRECISIONS = ("float32", "bfloat16")
# texts per model call when the caller names none. ONNX Runtime on a CPU runs small batches faster
# per text, its activations staying in the core's cache: on one thread, 4,000 real sentences at
# 8, 16 and 32 texts ran 970, 950 and 840 sentences/s in int8 and 338, 346 and 328 in float32,
# while torch ran 287, 323 and 337 (docs/benchmarks.md, "Backends and precisions")
DEFAULT_BATCH_SIZES = {"torch": 32, "onnx": 16}
# What one more model call costs on a CPU, in padded tokens. Texts of mixed lengths in one call all
# pay for the longest, so ``Predictor`` splits the length-sorted texts into the calls that cost
# least in padded tokens plus this per call. Fitted on one thread, where torch was best at 32 to 128
# and ONNX at 8 to 32 (docs/benchmarks.md, "Serving").
CALL_COST_IN_TOKENS = {"torch": 64, "onnx": 16}


class Predictor:
    """Loads a model folder once and answers batches; sorts each batch by token count to cut padding.

    precision: ``float32``, or ``bfloat16`` (PyTorch autocast: faster on CPUs with bfloat16
    instructions and on GPUs, answers close to float32's). A predictor built by ``from_folder`` with
    ``backend="onnx"`` runs the folder's ONNX export instead, in float32 or int8, and never imports
    torch. batch_size: texts per model call (default: ``DEFAULT_BATCH_SIZES`` of the backend).
    """

    def __init__(self, bundle: ModelBundle, *, device: str | torch.device | None = None,
                 batch_size: int | None = None, max_chars: int = DEFAULT_MAX_CHARS, precision: str = "float32"):
        _check_torch_precision(precision)
        self.bundle = bundle
        if isinstance(bundle.model, OnnxMultiTaskModel):
            backend = "onnx"
            self.device = None
            self.model = self._run = bundle.model
        else:
            backend = "torch"
            self._run = _TorchRunner(bundle.model, device, precision)
            self.device, self.model = self._run.device, self._run.model
        self.featurizer = bundle.featurizer
        self.batch_size = DEFAULT_BATCH_SIZES[backend] if batch_size is None else batch_size
        # a GPU runs the padding in parallel: there only the batch size splits (the split is unmeasured there)
        on_gpu = self.device is not None and self.device.type != "cpu"
        self.call_cost = None if on_gpu else CALL_COST_IN_TOKENS[backend]
        self.max_chars = max_chars
        self.precision = precision

    @classmethod
    def from_folder(cls, folder: str | Path, *, backend: str = "torch", precision: str = "float32",
                    pack_for_cpu: bool = True, threads: int | None = None, **options) -> Predictor:
        """A predictor that owns its model. On a CPU in float32, the torch backend packs its linear
        layers for oneDNN (``mtl.model.cpu_inference``: faster, same answers to 1e-6;
        ``pack_for_cpu=False`` keeps them). ``backend="onnx"`` runs ``onnx/`` of the folder (made by
        ``python -m jobs.export``) with ``threads`` threads (default: ONNX Runtime's, one per physical
        core)."""
        check_backend(backend, precision)
        if backend == "onnx":
            return cls(_onnx_bundle(folder, precision, threads), **options)
        predictor = cls(load_model_folder(folder), precision=precision, **options)
        if pack_for_cpu and predictor.device.type == "cpu" and precision == "float32":
            from mtl.model.cpu_inference import pack_linear_layers

            pack_linear_layers(predictor.model)
        return predictor

    @property
    def specs(self) -> dict[str, TaskSpec]:
        """The tasks this predictor answers (those with a head)."""
        return self.model.specs

    @property
    def task_specs(self) -> dict[str, TaskSpec]:
        """Every task of the model, similarity tasks (answered by the embedding alone) too."""
        return self.model.task_specs

    @property
    def embedding_size(self) -> int:
        if isinstance(self.model, OnnxMultiTaskModel):
            return self.model.embedding_size
        return self.model.encoder.hidden_size

    def embed(self, texts: list[str]) -> list[Prediction]:
        """Embeddings only: no head is run."""
        return self.predict(texts, tasks=[])

    def predict(self, texts: list | None = None, *, words: list | None = None,
                tasks: list[str] | None = None, embeddings: bool = True) -> list[Prediction]:
        """Predict for raw ``texts`` or pre-split ``words`` (exactly one), in input order.

        tasks: which heads to run (default all; ``[]`` for embeddings only). An unknown task name
        raises ValueError, since it is a mistake in the request, not in one item.
        """
        if (texts is None) == (words is None):
            raise ValueError("pass either texts or words")
        tasks = list(self.specs) if tasks is None else list(tasks)
        _check_tasks(tasks, self.specs, self.task_specs)
        items = texts if words is None else words
        check = self.check_text if words is None else self._check_words
        results: list[Prediction | None] = [None] * len(items)
        valid = []
        for index, item in enumerate(items):
            error = check(item)
            if error:
                results[index] = Prediction(error=error)
            else:
                valid.append(index)
        pre_split = words is not None
        valid_items = [items[index] for index in valid]
        features = (self.featurizer.featurize(words=valid_items) if pre_split
                    else self.featurizer.featurize(texts=valid_items))
        for chunk in self._model_calls([len(feature) for feature in features]):
            answers = self._predict_batch([valid_items[position] for position in chunk],
                                          self.featurizer.pad([features[position] for position in chunk], tensors="np"),
                                          pre_split, tasks, embeddings)
            for position, answer in zip(chunk, answers):
                results[valid[position]] = answer
        return results

    def _model_calls(self, lengths: list[int]) -> list[list[int]]:
        """The positions of each model call, shortest texts first, ``batch_size`` at most per call."""
        order = sorted(range(len(lengths)), key=lengths.__getitem__)
        if self.call_cost is None:
            return [order[start:start + self.batch_size] for start in range(0, len(order), self.batch_size)]
        return [order[start:end] for start, end in cheapest_split([lengths[position] for position in order],
                                                                  self.batch_size, self.call_cost)]

    def check_text(self, text) -> str | None:
        if text is None:
            return "text is null"
        if not isinstance(text, str):
            return f"text must be a string, got {type(text).__name__}"
        if not text.strip():
            return "text is empty"
        if len(text) > self.max_chars:
            return f"text has {len(text)} characters; the limit is {self.max_chars}"
        if not _encodable(text):
            return "text is not valid Unicode: it holds a lone surrogate"
        return None

    def _check_words(self, words) -> str | None:
        if not isinstance(words, (list, tuple)) or not all(isinstance(word, str) for word in words):
            return "tokens must be a list of strings"
        if not words:
            return "tokens is empty"
        if not all(word.strip() for word in words):
            return "tokens holds an empty token"
        if sum(len(word) + 1 for word in words) > self.max_chars:
            return f"tokens hold more than {self.max_chars} characters"
        if not all(map(_encodable, words)):
            return "tokens are not valid Unicode: one holds a lone surrogate"
        return None

    def _predict_batch(self, items: list, encoded: Encoded, pre_split: bool, tasks: list[str],
                       embeddings: bool) -> list[Prediction]:
        vectors, logits = self._run(encoded.inputs, tasks)
        vectors = vectors if embeddings else None
        probabilities = {task: softmax(values) for task, values in logits.items()}
        predictions = []
        for row, item in enumerate(items):
            prediction = Prediction(embedding=None if vectors is None else vectors[row],
                                    truncated=encoded.truncated[row])
            for task in tasks:
                spec = self.specs[task]
                if spec.kind == "classification":
                    prediction.labels[task] = sentence_label(spec, probabilities[task][row])
                else:
                    prediction.entities[task] = entity_spans(spec, probabilities[task][row], encoded, row, item,
                                                             pre_split)
            predictions.append(prediction)
        return predictions


class _TorchRunner:
    """Runs the PyTorch model on the Predictor's padded arrays, as ``OnnxMultiTaskModel`` runs its
    export: input arrays in, the embeddings and each task's logits out, as float32 arrays."""

    def __init__(self, model: MultiTaskModel, device: str | torch.device | None, precision: str):
        import torch

        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()
        self.precision = precision

    def __call__(self, inputs: dict[str, np.ndarray], tasks: list[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        import torch

        tensors = {name: torch.from_numpy(array).to(self.device) for name, array in inputs.items()}
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.bfloat16,
                                                    enabled=self.precision == "bfloat16"):
            output = self.model(**tensors, tasks=tasks)
        return (output.embeddings.float().cpu().numpy(),
                {task: values.float().cpu().numpy() for task, values in output.logits.items()})


def _encodable(text: str) -> bool:
    """Whether the tokenizer can take ``text``: JSON's escapes can make strings UTF-8 cannot hold."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def cheapest_split(sorted_lengths: list[int], most: int, call_cost: int) -> list[tuple[int, int]]:
    """Split texts of ``sorted_lengths`` (ascending) into runs ``[start, end)`` of at most ``most``
    that minimize the padded tokens (each run pays its longest for every text) plus ``call_cost``
    per run: a shortest path over the cut points, linear in the texts times ``most``."""
    cost = [0] + [None] * len(sorted_lengths)
    cut = [0] * (len(sorted_lengths) + 1)
    for end in range(1, len(sorted_lengths) + 1):
        for start in range(max(0, end - most), end):
            candidate = cost[start] + call_cost + (end - start) * sorted_lengths[end - 1]
            if cost[end] is None or candidate < cost[end]:
                cost[end], cut[end] = candidate, start
    runs, end = [], len(sorted_lengths)
    while end:
        runs.append((cut[end], end))
        end = cut[end]
    return runs[::-1]


def _check_tasks(tasks: list[str], answered: dict[str, TaskSpec], every: dict[str, TaskSpec]) -> None:
    """An unknown task, or one without an output (a similarity task), is a mistake in the request."""
    unknown = [task for task in tasks if task not in answered]
    if not unknown:
        return
    embedding_only = [task for task in unknown if task in every]
    if embedding_only:
        raise ValueError(f"task(s) {embedding_only} trained the embedding and have no output of their own: "
                         f"ask for the embedding instead; this model answers {list(answered)}")
    raise ValueError(f"unknown task(s) {unknown}; this model has {list(answered)}")


def check_backend(backend: str, precision: str, folder: str | Path | None = None) -> None:
    """Whether ``backend`` runs ``precision`` (and, given ``folder``, local or a URI, whether its
    export has it), before any model is loaded: jobs check on the driver, endpoints at deploy time."""
    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if backend == "torch":
        _check_torch_precision(precision)
    elif folder is None:
        check_onnx_precision(precision)
    else:
        exported_file(folder, precision, version=model_version(folder))


def _onnx_bundle(folder: str | Path, precision: str, threads: int | None) -> ModelBundle:
    """The folder's ONNX export in ``precision``, with its featurizer and task specs: its PyTorch
    weights are never read, nor torch and transformers imported."""
    local, settings, specs, metadata = load_model_parts(folder)
    model = load_onnx_model(local, precision=precision, version=model_version(local),
                            specs={spec.name: spec for spec in specs}, threads=threads)
    featurizer = Featurizer.from_folder(local, max_length=settings.max_length, input_names=model.input_names)
    return ModelBundle(model=model, featurizer=featurizer, settings=settings, metadata=metadata)


def _check_torch_precision(precision: str) -> None:
    if precision not in TORCH_PRECISIONS:
        raise ValueError(f"precision {precision!r}: the torch backend runs {' or '.join(TORCH_PRECISIONS)}"
                         + (" (int8 runs on the onnx backend)" if precision == "int8" else ""))


