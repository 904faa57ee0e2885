"""extract_features / match / retrieve / classify against transformers' Blip2ForImageTextRetrieval
(random weights, a real BERT tokenizer, real photos): same numbers within 1e-4."""

from __future__ import annotations

import pytest
import torch
from hf_models import save_generation_model
from transformers import AutoTokenizer, Blip2ForImageTextRetrieval

from blip2core import Blip2Error, load_pipeline
import tiny_models as T

ATOL = 1e-4
TEXTS = ["a cat lying on a blanket", "an astronaut", "a cup of coffee on a saucer", "a temple"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def retrieval(hf_itm_folder):
    folder = hf_itm_folder
    hf = Blip2ForImageTextRetrieval.from_pretrained(folder).eval()
    return hf, AutoTokenizer.from_pretrained(folder), load_pipeline(folder)


def hf_outputs(retrieval, photos, texts, itm: bool):
    hf, tokenizer, pipe = retrieval
    encoded = tokenizer(texts, padding=True, return_tensors="pt")
    assert (encoded["attention_mask"] == 0).any()  # texts of different lengths: the mask matters
    with torch.no_grad():
        return hf(pixel_values=pipe.preprocessor(photos), input_ids=encoded["input_ids"],
                  attention_mask=encoded["attention_mask"], use_image_text_matching_head=itm)


def test_itm_probabilities_and_itc_similarities_equal_transformers(retrieval, photos):
    pipe = retrieval[2]
    itm = hf_outputs(retrieval, photos, TEXTS, itm=True).logits_per_image  # [P, 2]
    itc = hf_outputs(retrieval, photos, TEXTS, itm=False).logits_per_image  # [I, T]
    got_itm = pipe.match(photos, TEXTS)
    got_itc = pipe.match(photos, TEXTS, method="itc")
    assert got_itm.shape == got_itc.shape == (4,) and got_itm.device.type == "cpu"
    torch.testing.assert_close(got_itm, itm.softmax(-1)[:, 1], rtol=0, atol=ATOL)
    torch.testing.assert_close(got_itc, itc.diagonal(), rtol=0, atol=ATOL)
    # one image against many texts: the image is paired with each
    one = pipe.match(photos[0], TEXTS, method="itc")
    torch.testing.assert_close(one, itc[0], rtol=0, atol=ATOL)


def test_features_have_lavis_fields_shapes_and_unit_norms_and_equal_transformers(retrieval, photos):
    hf, _, pipe = retrieval
    itc = hf_outputs(retrieval, photos[:2], TEXTS, itm=False)
    image = pipe.extract_features(photos[:2])
    text = pipe.extract_features(texts=TEXTS, mode="text")
    length = text.text_embeds.shape[1]
    assert image.image_embeds.shape == (2, T.NUM_QUERY_TOKENS, 32)
    assert image.image_embeds_proj.shape == (2, T.NUM_QUERY_TOKENS, 16)
    assert text.text_embeds.shape == (4, length, 32) and text.text_embeds_proj.shape == (4, length, 16)
    assert image.text_embeds is None and text.image_embeds is None
    for unit in (image.image_embeds_proj, text.text_embeds_proj):
        torch.testing.assert_close(unit.norm(dim=-1), torch.ones(unit.shape[:-1]), rtol=0, atol=1e-5)
    torch.testing.assert_close(image.image_embeds_proj, itc.image_embeds, rtol=0, atol=ATOL)
    torch.testing.assert_close(text.text_embeds_proj[:, 0], itc.text_embeds, rtol=0, atol=ATOL)
    torch.testing.assert_close(text.text_embeds, itc.text_model_output.last_hidden_state, rtol=0, atol=ATOL)
    with torch.no_grad():
        vision = hf.vision_model(pipe.preprocessor(photos[:2])).last_hidden_state
        query_tokens = hf.query_tokens.expand(2, -1, -1)
        queries = hf.qformer(query_embeds=query_tokens, encoder_hidden_states=vision).last_hidden_state
    torch.testing.assert_close(image.image_embeds, queries, rtol=0, atol=ATOL)
    assert set(image.to_dict()) == {"image_embeds", "image_embeds_proj"} and image["image_embeds"] is image.image_embeds


def test_multimodal_features_are_the_itm_query_states(retrieval, photos):
    hf, _, pipe = retrieval
    itm = hf_outputs(retrieval, photos, TEXTS, itm=True)
    got = pipe.extract_features(photos, TEXTS, mode="multimodal").multimodal_embeds
    assert got.shape == (4, T.NUM_QUERY_TOKENS, 32)
    expected = itm.text_model_output.last_hidden_state[:, : T.NUM_QUERY_TOKENS]
    torch.testing.assert_close(got, expected, rtol=0, atol=ATOL)


def test_retrieval_is_itc_top_k_rescored_by_itm_plus_itc(retrieval, photos):
    hf, tokenizer, pipe = retrieval
    k = 2
    result = pipe.retrieve(photos, TEXTS, k=k)
    itc = hf_outputs(retrieval, photos, TEXTS, itm=False).logits_per_image  # [I, T]
    encoded = tokenizer(TEXTS, padding=True, return_tensors="pt")
    pixel_values = pipe.preprocessor(photos)

    def itm_logit(i: int, t: int) -> float:
        with torch.no_grad():
            out = hf(pixel_values=pixel_values[i : i + 1], input_ids=encoded["input_ids"][t : t + 1],
                     attention_mask=encoded["attention_mask"][t : t + 1], use_image_text_matching_head=True)
        return float(out.logits_per_image[0, 1])

    for i, ranking in enumerate(result["image_to_text"]):
        candidates = itc[i].topk(k).indices.tolist()
        expected = sorted(((itm_logit(i, t) + float(itc[i, t]), t) for t in candidates), reverse=True)
        assert [e["index"] for e in ranking] == [t for _, t in expected]
        for entry, (score, t) in zip(ranking, expected):
            assert abs(entry["score"] - score) <= ATOL and abs(entry["itc"] - float(itc[i, t])) <= ATOL
    assert len(result["text_to_image"]) == len(TEXTS)
    for t, ranking in enumerate(result["text_to_image"]):
        assert sorted(e["index"] for e in ranking) == sorted(itc[:, t].topk(k).indices.tolist())


def test_retrieval_in_one_direction_scores_only_its_candidate_pairs(retrieval, photos, monkeypatch):
    _, _, pipe = retrieval
    both = pipe.retrieve(photos[:1], TEXTS, k=2)
    from blip2core.inference import retrieval as retrieval_module

    joint_pairs = []
    original = retrieval_module.itm_logits

    def counting(bridge, vision_tokens, ids, mask):
        joint_pairs.append(ids.shape[0])
        return original(bridge, vision_tokens, ids, mask)

    monkeypatch.setattr(retrieval_module, "itm_logits", counting)
    one_way = pipe.retrieve(photos[:1], TEXTS, k=2, directions=["image_to_text"])
    assert list(one_way) == ["image_to_text"] and one_way["image_to_text"] == both["image_to_text"]
    assert joint_pairs == [2]  # the image's 2 candidates, not every text (both directions need all of them)
    assert list(pipe.retrieve(photos[:1], TEXTS, k=2, directions="text_to_image")) == ["text_to_image"]
    with pytest.raises(ValueError, match=r"directions must name some of image_to_text, text_to_image"):
        pipe.retrieve(photos[:1], TEXTS, directions=["sideways"])


def test_classification_probabilities_follow_itc_and_itm(retrieval, photos):
    _, tokenizer, pipe = retrieval
    labels = ["cat", "astronaut", "cup of coffee"]
    texts = [f"a photo of {label}" for label in labels]
    itc = hf_outputs(retrieval, photos[:2], texts, itm=False).logits_per_image  # [2, 3]
    expected = (itc / 0.07).softmax(-1)
    result = pipe.classify(photos[:2], labels)
    assert [list(r["scores"]) for r in result] == [labels, labels]
    got = torch.tensor([list(r["scores"].values()) for r in result])
    torch.testing.assert_close(got, expected, rtol=0, atol=ATOL)
    assert [r["label"] for r in result] == [labels[j] for j in expected.argmax(-1).tolist()]

    itm_result = pipe.classify(photos[0], labels, method="itm")
    logits = hf_outputs(retrieval, [photos[0]] * 3, texts, itm=True).logits_per_image
    torch.testing.assert_close(torch.tensor(list(itm_result[0]["scores"].values())),
                               (logits[:, 1] - logits[:, 0]).softmax(-1), rtol=0, atol=ATOL)


def test_a_captioning_checkpoint_gives_image_embeds_only_and_says_why(tmp_path, photos):
    hf = save_generation_model(tmp_path / "gen")
    pipe = load_pipeline(tmp_path / "gen")
    features = pipe.extract_features(photos[:1])
    assert features.image_embeds_proj is None
    with torch.no_grad():
        vision = hf.vision_model(pipe.preprocessor(photos[:1])).last_hidden_state
        expected = hf.qformer(query_embeds=hf.query_tokens, encoder_hidden_states=vision).last_hidden_state
    torch.testing.assert_close(features.image_embeds, expected, rtol=0, atol=ATOL)
    with pytest.raises(Blip2Error, match=r"match\(method='itm'\) needs a Q-Former with text heads"):
        pipe.match(photos[0], "a cat")
    with pytest.raises(Blip2Error, match=r"extract_features\(mode='text'\) needs a Q-Former with text heads"):
        pipe.extract_features(texts="a cat", mode="text")
    with pytest.raises(Blip2Error, match=r"language model has no tokenizer.*set the llm option 'tokenizer'"):
        pipe.caption(photos[0])  # this folder was saved without one


def test_bad_arguments_are_named(retrieval, photos):
    pipe = retrieval[2]
    with pytest.raises(ValueError, match=r"got 2 images and 3 texts"):
        pipe.match(photos[:2], TEXTS[:3])
    with pytest.raises(ValueError, match=r"unknown method 'cosine'; expected one of itm, itc"):
        pipe.match(photos[0], "a cat", method="cosine")
    with pytest.raises(ValueError, match=r"unknown mode 'both'"):
        pipe.extract_features(photos[0], mode="both")
    with pytest.raises(ValueError, match=r"mode 'multimodal' needs texts"):
        pipe.extract_features(photos[0], mode="multimodal")
    with pytest.raises(ValueError, match=r"k must be a positive int, got 0"):
        pipe.retrieve(photos, TEXTS, k=0)
    with pytest.raises(ValueError, match=r"labels must be distinct"):
        pipe.classify(photos[0], ["cat", "cat"])
    with pytest.raises(TypeError, match=r"texts\[1\] must be a string, got int"):
        pipe.match(photos[:2], ["a cat", 7])
