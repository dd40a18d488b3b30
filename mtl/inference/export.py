"""Export a model folder to ONNX: the whole model in float32, optimized, and an int8 variant.

Each file is checked against PyTorch on a sample before it is kept: float32 must give the same
numbers (``FLOAT32_TOLERANCE``), int8 embeddings must stay close (``INT8_MIN_MEAN_COSINE`` on
average, ``INT8_MIN_COSINE`` for every text); an export that misses fails with the figures and
writes nothing. ``mtl.inference.onnx_backend`` reads the result.

int8 is ONNX Runtime's dynamic quantization of every matrix product with a weight matrix: int8
weights per output channel, activations quantized to uint8 per batch. The products of two
activations (attention scores) and the embedding lookups stay float32. On x86 CPUs without VNNI
the uint8 x int8 products are summed in int16 (``vpmaddubsw``), which can saturate; 7-bit weights
(``reduce_range``) avoid it at some cost in precision. So there both are made and checked, and
the one closer to float32 is kept.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import platform
import tempfile
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mtl import storage
from mtl.data.features import Encoded
from mtl.inference.model_folder import ModelBundle, load_model_folder, model_version
from mtl.inference.onnx_backend import EMBEDDING_OUTPUT, EXPORT_FILE, EXPORT_FOLDER, TOKEN_OUTPUT, OnnxMultiTaskModel
from mtl.metrics import row_cosines

FLOAT32_TOLERANCE = 1e-3   # largest absolute difference from PyTorch, on any output
INT8_MIN_MEAN_COSINE = 0.98  # mean cosine between the int8 and the float32 embeddings of the sample
INT8_MIN_COSINE = 0.95       # lowest cosine between an int8 and a float32 embedding of the sample
OPSET = 18
SAMPLE_TEXTS = [
    "Sam Taylor flew from Lima to Berlin on Tuesday.",
    "The film was a delight from start to finish!",
    "I want to cancel my card, it was charged twice.",
    "ok",
    "Acme Corp. reported revenue of $4.2 billion, up 12% on the year.",
    "What time does the museum on 5th Avenue open?",
    "worst. service. ever. never again @hooli",
    "Dr. Ngozi Okonjo-Iweala met officials in Geneva and Brussels last week to discuss trade.",
]


@dataclass
class ExportReport:
    """What was written where, and how close each precision came to PyTorch on the sample."""

    folder: str
    files: dict[str, str]
    float32_max_difference: float
    int8_min_cosine: float
    int8_mean_cosine: float
    int8_label_agreement: float
    cpu: str
    reduce_range: bool


class _Exportable(nn.Module):
    """The model as a function of its inputs alone: the embedding, each task's logits, then the
    encoder's token states (the output sentence-transformers' ONNX backend reads)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        output = self.model(input_ids, attention_mask, token_type_ids)
        return (output.embeddings, *output.logits.values(), output.token_embeddings)


def export_onnx(folder: str | Path, *, sample: list[str] | None = None) -> ExportReport:
    """Add ``onnx/`` to a model folder (local or a URI): export, optimize, quantize, check, write."""
    bundle = load_model_folder(folder)
    texts = sample or SAMPLE_TEXTS
    encoded = bundle.featurizer.encode(texts=texts)  # one tokenization for every check
    reference = _torch_outputs(bundle, encoded)
    cpu = cpu_family()
    with tempfile.TemporaryDirectory(prefix="mtl-export-") as staging:
        staging = Path(staging)
        float32 = staging / "model.onnx"
        _export(bundle, float32)
        _optimize(float32)
        exported = _onnx_outputs(float32, bundle, encoded)
        difference = max(float(np.abs(exported[name] - want).max()) for name, want in reference.items())
        if difference > FLOAT32_TOLERANCE:
            raise RuntimeError(f"the ONNX export differs from PyTorch by {difference:.2e} "
                               f"(the limit is {FLOAT32_TOLERANCE:.0e}); nothing was written")
        int8, reduce_range, agreement = _quantize_and_check(float32, staging, bundle, encoded, reference, cpu)
        files = {"float32": f"{EXPORT_FOLDER}/{float32.name}", "int8": f"{EXPORT_FOLDER}/{int8.name}"}
        description = {
            "model_version": model_version(folder),
            "files": files, "opset": OPSET, "inputs": bundle.featurizer.input_names,
            "outputs": _output_names(bundle),
            "quantization": {"cpu": cpu, "operators": "MatMul and Gemm with a weight matrix",
                             "weights": "int8, per channel, symmetric",
                             "activations": "uint8, per batch (dynamic)", "reduce_range": reduce_range},
            "check": {"float32_max_difference": difference, **agreement, "sample_texts": len(texts)},
            "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        (staging / "export.json").write_text(json.dumps(description, indent=2))
        storage.delete_file(storage.join(folder, EXPORT_FILE))  # no reader takes a half-written export
        storage.upload_folder(staging, storage.join(folder, EXPORT_FOLDER), last="export.json")
    return ExportReport(folder=str(folder), files=files, float32_max_difference=difference, cpu=cpu,
                        reduce_range=reduce_range, **agreement)


def cpu_family() -> str:
    """The CPU family int8 kernels are picked for, named as sentence-transformers names its files."""
    machine = platform.machine().lower()
    if machine in ("arm64", "aarch64"):
        return "arm64"
    flags = set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    if "avx512_vnni" in flags or "avx512vnni" in flags:
        return "avx512_vnni"
    if "avx512f" in flags:
        return "avx512"
    return "avx2" if "avx2" in flags else "generic"


def _export(bundle: ModelBundle, path: Path) -> None:
    names = bundle.featurizer.input_names
    encoded = bundle.featurizer.encode(texts=SAMPLE_TEXTS[:2])
    outputs = _output_names(bundle)
    axes = {name: {0: "batch", 1: "sequence"} for name in [*names, TOKEN_OUTPUT]}
    axes |= {EMBEDDING_OUTPUT: {0: "batch"}}
    axes |= {task: {0: "batch"} if spec.kind == "classification" else {0: "batch", 1: "sequence"}
             for task, spec in bundle.model.specs.items()}
    # the exporter narrates every stage on stdout and warns about the dynamic axes it was given
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(_Exportable(bundle.model).eval(), tuple(encoded.inputs[name] for name in names),
                          str(path), input_names=names, output_names=outputs, dynamic_axes=axes,
                          opset_version=OPSET, dynamo=True, external_data=False)


def _output_names(bundle: ModelBundle) -> list[str]:
    clashes = sorted({EMBEDDING_OUTPUT, TOKEN_OUTPUT} & set(bundle.model.specs))
    if clashes:
        raise ValueError(f"task name(s) {clashes} are the names of the export's own outputs; rename the task(s)")
    return [EMBEDDING_OUTPUT, *bundle.model.specs, TOKEN_OUTPUT]


def _optimize(path: Path) -> None:
    """ONNX Runtime's transformer optimizer (LayerNorm and GELU fusions), in place."""
    from onnxruntime.transformers.optimizer import optimize_model

    logging.getLogger("onnxruntime.transformers").setLevel(logging.ERROR)
    optimize_model(str(path), model_type="bert", num_heads=0, hidden_size=0).save_model_to_file(str(path))


def _quantize_and_check(float32: Path, staging: Path, bundle: ModelBundle, encoded: Encoded,
                        reference: dict[str, np.ndarray], cpu: str) -> tuple[Path, bool, dict]:
    """The int8 model for ``cpu``: both weight ranges where saturation is possible, the closer kept."""
    candidates = [False, True] if cpu in ("avx2", "avx512", "generic") else [False]
    best = None
    for reduce_range in candidates:
        path = staging / f"model_qint8_{cpu}{'_reduced' if reduce_range else ''}.onnx"
        _quantize(float32, path, reduce_range=reduce_range)
        agreement = _agreement(_onnx_outputs(path, bundle, encoded), reference, bundle, encoded)
        if best is None or agreement["int8_mean_cosine"] > best[2]["int8_mean_cosine"]:
            best = (path, reduce_range, agreement)
    path, reduce_range, agreement = best
    for other in staging.glob("model_qint8_*.onnx"):
        if other != path:
            other.unlink()
    final = staging / f"model_qint8_{cpu}.onnx"
    path.rename(final)
    if agreement["int8_mean_cosine"] < INT8_MIN_MEAN_COSINE or agreement["int8_min_cosine"] < INT8_MIN_COSINE:
        raise RuntimeError(f"the int8 model's embeddings are too far from float32's: cosine mean "
                           f"{agreement['int8_mean_cosine']:.4f}, lowest {agreement['int8_min_cosine']:.4f} (the "
                           f"limits are {INT8_MIN_MEAN_COSINE} and {INT8_MIN_COSINE}); nothing was written")
    return final, reduce_range, agreement


def _quantize(source: Path, target: Path, *, reduce_range: bool) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # the exporter's graph has ops whose output types shape inference cannot tell: they are float
    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=True,
                     reduce_range=reduce_range, op_types_to_quantize=["MatMul", "Gemm"],
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT, "MatMulConstBOnly": True})


def _agreement(outputs: dict[str, np.ndarray], reference: dict[str, np.ndarray], bundle: ModelBundle,
               encoded: Encoded) -> dict:
    """Embedding cosines, and the share of sentence labels and token tags (padding aside) that stay the same."""
    got, want = outputs[EMBEDDING_OUTPUT], reference[EMBEDDING_OUTPUT]
    cosines = row_cosines(got, want)
    real = encoded.inputs["attention_mask"].numpy().astype(bool)
    same = []
    for task, spec in bundle.model.specs.items():
        agrees = outputs[task].argmax(-1) == reference[task].argmax(-1)
        same.append(float(agrees[real].mean() if spec.kind == "tagging" else agrees.mean()))
    return {"int8_min_cosine": float(cosines.min()), "int8_mean_cosine": float(cosines.mean()),
            "int8_label_agreement": float(np.mean(same)) if same else 1.0}


@torch.inference_mode()
def _torch_outputs(bundle: ModelBundle, encoded: Encoded) -> dict[str, np.ndarray]:
    """Every output the export has, by its name, from PyTorch."""
    values = _Exportable(bundle.model).eval()(*(encoded.inputs[name] for name in bundle.featurizer.input_names))
    return {name: value.numpy() for name, value in zip(_output_names(bundle), values)}


def _onnx_outputs(path: Path, bundle: ModelBundle, encoded: Encoded) -> dict[str, np.ndarray]:
    """Every output of the exported file, by its name."""
    model = OnnxMultiTaskModel(path, specs=bundle.model.specs)
    names = _output_names(bundle)
    values = model.session.run(names, {name: encoded.inputs[name].numpy() for name in model.input_names})
    return dict(zip(names, values))
