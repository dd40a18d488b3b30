import numpy as np
import pytest
import torch

from mtl.inference.predictor import CALL_COST_IN_TOKENS, Predictor, cheapest_split


@pytest.fixture
def predictor(tiny_bundle):
    return Predictor(tiny_bundle, device="cpu", batch_size=2, max_chars=500)


def test_bad_items_get_errors_and_good_items_keep_their_order(predictor):
    texts = ["Alice flew to Paris.", "", None, 7, "x" * 501, "Bob", "   ", "a\ud800b"]
    results = predictor.predict(texts)
    assert [result.error is None for result in results] == [True, False, False, False, False, True, False, False]
    assert results[1].error == "text is empty"
    assert "lone surrogate" in results[7].error  # JSON's "\ud800" escape makes such strings
    assert results[3].error == "text must be a string, got int"
    assert "limit is 500" in results[4].error
    assert results[2].embedding is None and results[2].labels == {}
    alone = predictor.predict(["Bob"])[0]
    np.testing.assert_allclose(results[5].embedding, alone.embedding, atol=1e-5)


def test_sorting_and_batching_do_not_change_answers(predictor, tiny_bundle):
    texts = ["one two three four five six", "a", "Dana Lee works at Hooli in Seoul", "ok then"]
    batched = predictor.predict(texts)
    single = [Predictor(tiny_bundle, device="cpu", batch_size=1).predict([text])[0] for text in texts]
    for together, alone in zip(batched, single):
        np.testing.assert_allclose(together.embedding, alone.embedding, atol=1e-5)
        assert together.labels["sentiment"].label == alone.labels["sentiment"].label
        assert [(e.start, e.end, e.label) for e in together.entities["ner"]] == \
            [(e.start, e.end, e.label) for e in alone.entities["ner"]]


def test_label_probabilities_cover_every_class(predictor):
    label = predictor.predict(["fine"])[0].labels["sentiment"]
    assert set(label.probabilities) == {"negative", "positive"}
    assert sum(label.probabilities.values()) == pytest.approx(1.0)
    assert label.score == max(label.probabilities.values())


def force_tags(bundle, tag_bias: dict[str, float]):
    """Make the ner head predict a fixed tag per word position pattern, via its bias."""
    head = bundle.model.heads["ner"].classifier
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(torch.tensor([tag_bias.get(tag, 0.0) for tag in bundle.model.specs["ner"].labels]))


def test_entities_map_to_character_offsets(tiny_bundle):
    force_tags(tiny_bundle, {"B-PER": 5.0})  # every word starts a PER entity
    text = "Hi  Dana-Lee!"
    entities = Predictor(tiny_bundle, device="cpu").predict([text])[0].entities["ner"]
    assert [(e.start, e.end, e.text) for e in entities] == [(0, 2, "Hi"), (4, 8, "Dana"), (8, 9, "-"),
                                                          (9, 12, "Lee"), (12, 13, "!")]
    assert all(text[e.start:e.end] == e.text and e.label == "PER" for e in entities)
    assert all(0 < e.score <= 1 for e in entities)


def test_pre_split_words_give_token_index_spans(tiny_bundle):
    force_tags(tiny_bundle, {"I-LOC": 5.0})  # one entity over every word
    words = ["New", "York", "1996-08-22"]
    [result] = Predictor(tiny_bundle, device="cpu").predict(words=[words])
    [entity] = result.entities["ner"]
    assert (entity.start, entity.end, entity.label, entity.text) == (0, 3, "LOC", "New York 1996-08-22")


def test_bad_word_lists_get_errors(predictor):
    results = predictor.predict(words=[["ok"], [], "not a list", ["a", ""], ["b", 3], ["c", "\udfff"]])
    assert [result.error for result in results] == [
        None, "tokens is empty", "tokens must be a list of strings", "tokens holds an empty token",
        "tokens must be a list of strings", "tokens are not valid Unicode: one holds a lone surrogate"]


def test_over_long_text_is_truncated_and_flagged(predictor):
    result = predictor.predict([" ".join(["word"] * 100)])[0]  # 500 chars, 102 subwords > 64
    assert result.error is None and result.truncated
    kept = " ".join(["word"] * 62)  # [CLS], 62 words of one subword each, [SEP]
    [whole] = predictor.predict([kept])
    assert not whole.truncated
    np.testing.assert_allclose(result.embedding, whole.embedding, atol=1e-5)
    assert result.labels["sentiment"].label == whole.labels["sentiment"].label
    assert [(e.start, e.end, e.label) for e in result.entities["ner"]] == \
        [(e.start, e.end, e.label) for e in whole.entities["ner"]]


def test_task_subset_and_embeddings_off(predictor):
    result = predictor.predict(["hello"], tasks=["sentiment"], embeddings=False)[0]
    assert result.embedding is None and list(result.labels) == ["sentiment"] and result.entities == {}
    assert predictor.embed(["hello"])[0].labels == {}


def test_unknown_task_is_a_request_error(predictor):
    with pytest.raises(ValueError, match=r"unknown task\(s\) \['topic'\]"):
        predictor.predict(["hello"], tasks=["topic"])


def test_to_dict_is_json_ready(predictor):
    import json

    [prediction] = predictor.predict(["Bob"])
    data = prediction.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["labels"]["sentiment"]["label"] == prediction.labels["sentiment"].label
    assert isinstance(data["embedding"], list) and len(data["embedding"]) == 32


def _linear_count(model: torch.nn.Module) -> int:
    return sum(type(module) is torch.nn.Linear for module in model.modules())


def test_packed_linear_layers_give_the_same_answers(tiny_bundle):
    from mtl.model.cpu_inference import PackedLinear, pack_linear_layers

    texts = ["Alice flew to Paris.", "ok", "Dana Lee works at Hooli in Seoul"]
    plain = Predictor(tiny_bundle, device="cpu").predict(texts)
    linears = _linear_count(tiny_bundle.model)
    assert pack_linear_layers(tiny_bundle.model) == linears > 0
    assert _linear_count(tiny_bundle.model) == 0
    assert sum(isinstance(module, PackedLinear) for module in tiny_bundle.model.modules()) == linears
    packed = Predictor(tiny_bundle, device="cpu").predict(texts)
    for before, after in zip(plain, packed):
        np.testing.assert_allclose(after.embedding, before.embedding, atol=1e-5)
        for task, label in before.labels.items():
            assert after.labels[task].label == label.label
            assert after.labels[task].score == pytest.approx(label.score, abs=1e-5)
        assert [(e.start, e.end, e.label) for e in after.entities["ner"]] == \
            [(e.start, e.end, e.label) for e in before.entities["ner"]]


def test_a_predictor_from_a_folder_packs_on_cpu_unless_told_not_to(tiny_model_dir):
    assert _linear_count(Predictor.from_folder(tiny_model_dir, device="cpu").model) == 0
    assert _linear_count(Predictor.from_folder(tiny_model_dir, device="cpu", pack_for_cpu=False).model) > 0


def test_packing_leaves_the_model_alone_where_onednn_cannot_run(tiny_bundle, monkeypatch):
    from mtl.model.cpu_inference import pack_linear_layers

    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    linears = _linear_count(tiny_bundle.model)
    assert pack_linear_layers(tiny_bundle.model) == 0
    assert _linear_count(tiny_bundle.model) == linears
    tiny_bundle.model.to(torch.float64)
    monkeypatch.undo()
    assert pack_linear_layers(tiny_bundle.model) == 0, "only float32 layers are packed"


def test_items_are_batched_by_token_count_not_characters(tiny_bundle):
    # digits split into many subwords: by characters the first two would share a batch
    texts = ["9 8 7 6 5 4 3 2 1 0", "an ordinary sentence", "words", "1 2 3 4 5 6 7 8 9"]
    predictor = Predictor(tiny_bundle, device="cpu", batch_size=2)
    shapes = []
    forward = predictor.model.forward
    predictor.model.forward = lambda **inputs: shapes.append(tuple(inputs["input_ids"].shape)) or forward(**inputs)
    predictor.predict(texts)
    lengths = sorted(len(item) for item in tiny_bundle.featurizer.featurize(texts=texts))
    assert shapes == [(2, lengths[1]), (2, lengths[3])]
    assert lengths[1] < lengths[3], "the texts no longer tell token order from character order"


def test_the_cheapest_split_pays_a_call_rather_than_padding_and_keeps_the_most_per_call():
    # one call: 4 + 4 * 10 = 44 padded tokens and call costs; the long text alone: (4 + 3 * 2) + (4 + 10) = 24
    assert cheapest_split([2, 2, 2, 10], most=4, call_cost=4) == [(0, 3), (3, 4)]
    # at 100 per call, one call (140) beats two (210)
    assert cheapest_split([2, 2, 2, 10], most=4, call_cost=100) == [(0, 4)]
    runs = cheapest_split([3] * 5, most=2, call_cost=1)
    assert len(runs) == 3 and all(end - start <= 2 for start, end in runs)
    assert [start for start, _ in runs[1:]] == [end for _, end in runs[:-1]] and runs[0][0] == 0 and runs[-1][1] == 5
    assert cheapest_split([], most=4, call_cost=4) == []


def test_a_long_text_gets_a_call_of_its_own_and_every_answer_stays_the_same(tiny_bundle):
    long_text = " ".join(["word"] * 120)
    texts = ["a", long_text, "ok then", "fine"]
    predictor = Predictor(tiny_bundle, device="cpu", batch_size=64)
    assert predictor.call_cost == CALL_COST_IN_TOKENS["torch"]
    shapes = []
    forward = predictor.model.forward
    predictor.model.forward = lambda **inputs: shapes.append(tuple(inputs["input_ids"].shape)) or forward(**inputs)
    together = predictor.predict(texts)
    assert [count for count, _ in shapes] == [3, 1]
    alone = [Predictor(tiny_bundle, device="cpu", batch_size=1).predict([text])[0] for text in texts]
    for mixed, single in zip(together, alone):
        np.testing.assert_allclose(mixed.embedding, single.embedding, atol=1e-5)
