"""Distillation: the soft-target, embedding and layer losses against hand-computed values, the checks
made before a run starts, and a student distilled from a teacher on the session's Ray."""

import json
import math

import pyarrow.parquet as pq
import pytest
import torch
from train_configs import demo_config, demo_texts

from mtl.config import Distillation, validate_config
from mtl.errors import ConfigError
from mtl.inference.model_folder import load_model_folder
from mtl.inference.predictor import Predictor
from mtl.model.distillation_losses import IGNORED, embedding_distance, layer_distance, soft_target_loss, teacher_layers
from mtl.model.freezing import encoder_layers
from mtl.train.objective import TrainingModule
from mtl.train.teacher import TEACHER_LAYERS, load_teacher, resolve_teacher, student_config, teacher_specs
from mtl.train.weighting import LossWeighting


def kl(teacher: list[float], student: list[float]) -> float:
    return sum(q * math.log(q / p) for q, p in zip(teacher, student))


def softmax(logits: list[float], temperature: float) -> list[float]:
    exps = [math.exp(value / temperature) for value in logits]
    return [value / sum(exps) for value in exps]


def test_soft_targets_are_the_tempered_kl_times_the_temperature_squared():
    student, teacher = [0.0, 0.0], [math.log(3.0), 0.0]
    for temperature in (1.0, 2.0):
        expected = kl(softmax(teacher, temperature), softmax(student, temperature)) * temperature ** 2
        loss = soft_target_loss(torch.tensor([student]), torch.tensor([teacher]), temperature)
        assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert soft_target_loss(torch.tensor([teacher]), torch.tensor([teacher]), 2.0).item() == pytest.approx(0, abs=1e-6)


def test_soft_targets_of_tagging_count_only_the_labelled_positions():
    student = torch.tensor([[[0.0, 0.0], [5.0, -5.0], [0.0, 0.0]]])
    teacher = torch.tensor([[[math.log(3.0), 0.0], [-5.0, 5.0], [0.0, 0.0]]])
    labels = torch.tensor([[0, IGNORED, 1]])  # the middle (a later subword) is not compared
    expected = (kl(softmax([math.log(3.0), 0.0], 1), [0.5, 0.5]) + 0.0) / 2
    assert soft_target_loss(student, teacher, 1.0, labels).item() == pytest.approx(expected, rel=1e-5)


def test_embedding_distance_is_the_mean_squared_distance():
    student, teacher = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    assert embedding_distance(student, teacher).item() == pytest.approx(1.0)  # (2 + 0) / 2


def test_layer_distance_is_the_mean_squared_difference_at_real_tokens():
    student = (torch.tensor([[[1.0, 1.0], [9.0, 9.0]]]), torch.tensor([[[0.0, 2.0], [9.0, 9.0]]]))
    teacher = torch.tensor([[[[0.0, 1.0], [0.0, 0.0]]], [[[0.0, 0.0], [0.0, 0.0]]]])
    mask = torch.tensor([[1, 0]])  # the second position is padding: never compared
    # layer 1: (1 + 0) / 2, layer 2: (0 + 4) / 2, their mean
    assert layer_distance(student, teacher, mask).item() == pytest.approx(1.25)


def test_each_student_layer_learns_a_teacher_layer_spread_evenly_up_to_the_top():
    assert teacher_layers(3, 6) == [1, 3, 5]   # every other layer: the very layers the student kept
    assert teacher_layers(4, 6) == [0, 2, 3, 5]
    assert teacher_layers(2, 2) == [0, 1]
    with pytest.raises(ValueError, match="a student of 3 layers cannot learn layer by layer from a teacher of 2"):
        teacher_layers(3, 2)


def test_the_layer_loss_joins_the_objective_of_a_distilled_batch(tiny_bundle, tiny_model_dir):
    settings = Distillation(teacher=str(tiny_model_dir), layer_weight=2.0)
    teacher = load_teacher(settings, tiny_bundle.model, torch.device("cpu"))
    assert teacher.layers == [0, 1]
    weighting = LossWeighting(strategy="static", tasks=["sentiment", "ner"])
    inputs = tiny_bundle.featurizer.encode(texts=["a good film", "bad"]).inputs
    tiny_bundle.model.eval()  # no dropout: the same objective twice
    with torch.no_grad():  # the student starts as the teacher's copy: move it off
        for parameter in tiny_bundle.model.encoder.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))

    def objective(layer_weight: float):
        batch = {**inputs, "labels": torch.tensor([1, 0])}
        teacher.annotate("sentiment", batch, tiny_bundle.featurizer.input_names)
        assert batch[TEACHER_LAYERS].shape == (2, 2, inputs["input_ids"].shape[1], 32)  # layers, batch, seq, width
        module = TrainingModule(tiny_bundle.model, weighting,
                                distillation=settings.model_copy(update={"layer_weight": layer_weight}))
        return module({"sentiment": batch})[1]["sentiment"]

    with_layers, without = objective(2.0), objective(0.0)
    student = tiny_bundle.model(**inputs, layer_states=True).layer_states
    taught = torch.stack(teacher.model(**inputs, layer_states=True).layer_states)
    expected = 2.0 * layer_distance(student, taught, inputs["attention_mask"])
    assert expected.item() > 0 and (with_layers - without).item() == pytest.approx(expected.item(), rel=1e-5)


def test_a_student_config_prunes_the_teacher_or_takes_another_encoder(tiny_model_dir, tiny_encoder_dir, tmp_path):
    config = validate_config(demo_config("all-MiniLM-L6-v2", str(tmp_path / "run")))
    pruned = student_config(config, str(tiny_model_dir), keep_layers=1)
    assert pruned.model.encoder == str(tiny_encoder_dir) and pruned.model.init_from == str(tiny_model_dir)
    assert pruned.model.keep_layers == 1 and pruned.distill.teacher == str(tiny_model_dir)
    other = student_config(config, str(tiny_model_dir), student="all-MiniLM-L6-v2")
    assert other.model.encoder == "all-MiniLM-L6-v2" and other.model.init_from is None


def test_jobs_distill_sets_distill_fields_of_a_config_that_has_no_distill_section(tiny_model_dir, tmp_path):
    from jobs.distill import distill_config, parse_args

    teacher = str(tiny_model_dir)
    args = parse_args(["--teacher", teacher, "--config", "jobs/configs/conll_sst2.yaml",
                       "--set", "distill.layer_weight=0.5", "--set", "distill.temperature=4"])
    distill = distill_config(args).distill
    assert (distill.teacher, distill.layer_weight, distill.temperature) == (teacher, 0.5, 4.0)


def test_a_teacher_must_have_every_task_and_the_students_embedding_size(tiny_model_dir, demo_specs, tmp_path):
    from mtl.tasks import TaskSpec

    with pytest.raises(ConfigError, match=r"distill.teacher: .* has no \['topic'\] task"):
        teacher_specs([*demo_specs, TaskSpec("topic", "classification", ("a", "b"))], str(tiny_model_dir))
    # MiniLM shares the tiny teacher's tokenizer but embeds in 384 dimensions, not 32
    config = student_config(validate_config(demo_config("all-MiniLM-L6-v2", str(tmp_path / "run"))),
                            str(tiny_model_dir), student="all-MiniLM-L6-v2")
    with pytest.raises(ConfigError, match="distill.embedding_weight: the student's encoder is 384 wide"):
        resolve_teacher(config)
    heads_only = config.model_copy(update={"distill": config.distill.model_copy(update={"embedding_weight": 0})})
    assert resolve_teacher(heads_only).distill.teacher == str(tiny_model_dir)
    layers = heads_only.model_copy(update={"distill": heads_only.distill.model_copy(update={"layer_weight": 1.0})})
    with pytest.raises(ConfigError, match="distill.layer_weight: the student's encoder is 384 wide"):
        resolve_teacher(layers)


def test_a_student_learning_layer_by_layer_has_at_most_the_teachers_layers(tiny_model_dir, tmp_path):
    config = student_config(validate_config(demo_config("all-MiniLM-L6-v2", str(tmp_path / "run"))),
                            str(tiny_model_dir), keep_layers=[0, 1])
    config = config.model_copy(update={"distill": config.distill.model_copy(update={"layer_weight": 1.0})})
    assert resolve_teacher(config).distill.layer_weight == 1.0
    deeper = student_config(config, str(tiny_model_dir), student=str(tiny_student(tmp_path / "deep", layers=3)))
    with pytest.raises(ConfigError, match="distill.layer_weight: a student of 3 layers .* teacher of 2"):
        resolve_teacher(deeper)


def tiny_student(folder, layers: int):
    """An encoder of the tiny teacher's width and tokenizer, ``layers`` deep, initialized differently:
    a student that starts far from the teacher."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from mtl.inference.model_folder import resolve_encoder

    torch.manual_seed(1)
    tokenizer = AutoTokenizer.from_pretrained(resolve_encoder("all-MiniLM-L6-v2"))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=layers,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def other_tiny_encoder(tmp_path):
    return tiny_student(tmp_path / "student", layers=1)


@pytest.mark.ray
@pytest.mark.slow
def test_a_student_learns_to_answer_as_its_teacher(ray_local, tiny_model_dir, other_tiny_encoder, tmp_path):
    from mtl.inference.model_folder import build_model
    from mtl.train.trainer import fit

    raw = demo_config("unused", str(tmp_path / "run"), epochs=3, learning_rate=3e-3, eval_every_steps=4)
    # no labels: whatever the student agrees with the teacher on, it was taught
    raw["distill"] = {"teacher": str(tiny_model_dir), "label_weight": 0.0, "temperature": 1.0, "layer_weight": 0.1}
    # unlabeled text the teacher labels first; a blank line it cannot label is passed over
    corpus = tmp_path / "unlabeled.txt"
    corpus.write_text("".join(f"{text} Again.\n" for text in demo_texts()[:30]) + "   \n")
    config = student_config(validate_config(raw), str(tiny_model_dir), student=str(other_tiny_encoder),
                            corpus=str(corpus))
    summary = fit(config)
    labeled = pq.read_table(tmp_path / "run" / "teacher_labels")
    assert labeled.num_rows == 31 and {"sentiment", "ner"} <= set(labeled.column_names)
    assert labeled["error"].null_count == 30
    student = load_model_folder(summary.best_model)
    assert len(encoder_layers(student.model)) == 1
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["steps"] == summary.steps
    texts = demo_texts()
    teacher = Predictor.from_folder(tiny_model_dir).predict(texts)
    torch.manual_seed(config.train.seed)
    untaught = build_model(config.model, load_model_folder(tiny_model_dir).specs)  # where the student started
    before, after = (Predictor(bundle).predict(texts) for bundle in (untaught, student))

    def closeness(answers):
        return sum(float(torch.cosine_similarity(torch.tensor(mine.embedding), torch.tensor(theirs.embedding),
                                                 dim=0)) for mine, theirs in zip(answers, teacher)) / len(texts)

    def spans(answer):
        return [(entity.start, entity.end, entity.label) for entity in answer.entities["ner"]]

    def agreement(answers):  # the share of the teacher's entities the student finds too
        found = sum(len(set(spans(mine)) & set(spans(theirs))) for mine, theirs in zip(answers, teacher))
        return found / sum(len(spans(theirs)) for theirs in teacher)

    assert closeness(after) > closeness(before) + 0.1
    assert agreement(after) > agreement(before)
    card = (tmp_path / "run" / "best" / "README.md").read_text()
    assert f"Distilled from `{tiny_model_dir}`" in card and "temperature 1.0" in card and "layer weight 0.1" in card
