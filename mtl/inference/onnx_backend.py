"""The whole multi-task model run by ONNX Runtime: the Predictor's second backend.

``python -m jobs.export`` writes the files (``mtl.inference.export``); this module reads them, with no torch.
An ``OnnxMultiTaskModel`` answers the Predictor's model call (input arrays in, the embeddings and
each task's logits out) as its PyTorch runner does, so the Predictor turns either's outputs into
answers by the same code.

The export lives in the model folder, laid out as sentence-transformers lays out its ONNX files::

    onnx/model.onnx                  float32: encoder, pooling and every head, dynamic batch and length
    onnx/model_qint8_<cpu>.onnx      int8 weights, dynamically quantized activations, for that CPU family
    onnx/export.json                 which file is which precision, the settings, the checks passed
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mtl import storage
from mtl.errors import ModelFolderError
from mtl.tasks import TaskSpec

EXPORT_FOLDER = "onnx"
EXPORT_FILE = f"{EXPORT_FOLDER}/export.json"
EMBEDDING_OUTPUT = "sentence_embedding"
TOKEN_OUTPUT = "last_hidden_state"  # the encoder's token states, named as optimum's feature extractor reads them
ONNX_PRECISIONS = ("float32", "int8")
# ONNX Runtime fuses each residual Add and the LayerNormalization after it into one
# SkipLayerNormalization; on CPU that kernel took a quarter of the int8 model's time, and the
# model runs faster without the fusion (int8 1.34x, float32 1.10x: docs/benchmarks.md)
SLOWER_FUSIONS = ["SkipLayerNormFusion"]


def export_command(folder: str | Path) -> str:
    return f"python -m jobs.export --model {folder}"


def check_onnx_precision(precision: str) -> None:
    if precision not in ONNX_PRECISIONS:
        raise ValueError(f"precision {precision!r}: the onnx backend runs {' or '.join(ONNX_PRECISIONS)}")


def exported_file(folder: str | Path, precision: str, *, version: str) -> str:
    """Which file of the folder's export (local or a URI) holds ``precision``, relative to the
    folder; the export must describe this very model (``version``). Errors name the command to run."""
    check_onnx_precision(precision)
    path = storage.join(folder, EXPORT_FILE)
    if not storage.is_file(path):
        raise ModelFolderError(f"{folder}: no ONNX export; make one with: {export_command(folder)}")
    description = json.loads(storage.read_text(path))
    if description.get("model_version") != version:
        raise ModelFolderError(f"{path}: the export is of another version of this model "
                               f"({description.get('model_version')}, the folder holds {version}); "
                               f"export again with: {export_command(folder)}")
    relative = description["files"].get(precision)
    if relative is None or not storage.is_file(storage.join(folder, relative)):
        raise ModelFolderError(f"{folder}: the ONNX export has no {precision} model; export again with: "
                               f"{export_command(folder)}")
    return relative


class OnnxMultiTaskModel:
    """An ONNX Runtime session over an exported model, called like ``MultiTaskModel``.

    Every output is computed in one run; ``tasks`` picks which are handed back.
    """

    def __init__(self, path: Path, *, specs: dict[str, TaskSpec], threads: int | None = None):
        """threads: ONNX Runtime's intra-op threads (default: its own, one per physical core)."""
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        # one pool per model; several one-thread models beat one wide one here
        options.intra_op_num_threads = threads or 0
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"],
                                                    disabled_optimizers=SLOWER_FUSIONS)
        self.task_specs = specs
        self.specs = {name: spec for name, spec in specs.items() if spec.has_head}  # those with an output
        self.input_names = [model_input.name for model_input in self.session.get_inputs()]
        outputs = {output.name: output for output in self.session.get_outputs()}
        self.embedding_size = int(outputs[EMBEDDING_OUTPUT].shape[-1])
        missing = [task for task in self.specs if task not in outputs]
        if missing:
            raise ModelFolderError(f"{path}: no output for task(s) {missing}; export again with: "
                                   f"{export_command(path.parent.parent)}")

    def __call__(self, inputs: dict[str, np.ndarray], tasks: list[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The sentence embeddings and the logits of each of ``tasks``."""
        values = self.session.run([EMBEDDING_OUTPUT, *tasks], {name: inputs[name] for name in self.input_names})
        return np.asarray(values[0]), {task: np.asarray(value) for task, value in zip(tasks, values[1:])}


def load_onnx_model(folder: Path, *, precision: str, version: str, specs: dict[str, TaskSpec],
                    threads: int | None = None) -> OnnxMultiTaskModel:
    """The local folder's export in ``precision``."""
    relative = exported_file(folder, precision, version=version)
    return OnnxMultiTaskModel(folder / relative, specs=specs, threads=threads)
