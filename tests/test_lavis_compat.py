"""The LAVIS entry point: the BLIP-2 snippets of LAVIS's README and example notebooks, run
unchanged except for the import line, against locally saved checkpoints that the LAVIS names are
pointed at (BLIP2_LAVIS_MODELS); their results equal blip2core's own API (itself checked against
transformers in test_inference_*)."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from blip2core import Blip2Error
from blip2core.compat import lavis
import tiny_models as T

IMPORT_LAVIS = "from lavis.models import load_model_and_preprocess"
IMPORT_OURS = "from blip2core.compat.lavis import load_model_and_preprocess"

SETUP = '''
import torch
from PIL import Image
# setup device to use
device = torch.device("cuda") if torch.cuda.is_available() else "cpu"
# load sample image
raw_image = Image.open("merlion.png").convert("RGB")
'''

# projects/blip2/README.md, "Image-to-text generation example" (the OPT model named in its comment)
CAPTIONING = '''
import torch
from lavis.models import load_model_and_preprocess
# loads BLIP-2 pre-trained model
model, vis_processors, _ = load_model_and_preprocess(name="blip2_opt", model_type="pretrain_opt2.7b", is_eval=True, device=device)
# prepare the image
image = vis_processors["eval"](raw_image).unsqueeze(0).to(device)
caption = model.generate({"image": image})
answer = model.generate({"image": image, "prompt": "Question: which city is this? Answer:"})
follow_up = model.generate({
    "image": image,
    "prompt": "Question: which city is this? Answer: singapore. Question: why?"})
context = [
    ("which city is this?", "singapore"),
    ("why?", "it has a statue of a merlion"),
]
question = "where is the name merlion coming from?"
template = "Question: {} Answer: {}."
prompt = " ".join([template.format(context[i][0], context[i][1]) for i in range(len(context))]) + " Question: " + question + " Answer:"
print(prompt)
chat = model.generate(
    {
        "image": image,
        "prompt": prompt
    },
    use_nucleus_sampling=False,
)
# use nucleus sampling for diverse outputs
sampled = model.generate({"image": image}, use_nucleus_sampling=True, num_captions=3)
'''

# README.md, "Visual question answering (VQA)", with the BLIP-2 model names
VQA = '''
from lavis.models import load_model_and_preprocess
model, vis_processors, txt_processors = load_model_and_preprocess(name="blip2_opt", model_type="pretrain_opt2.7b", is_eval=True, device=device)
# ask a random question.
question = "Which city is this photo taken?"
image = vis_processors["eval"](raw_image).unsqueeze(0).to(device)
question = txt_processors["eval"](question)
answers = model.predict_answers(samples={"image": image, "text_input": question}, inference_method="generate")
templated = model.predict_answers(samples={"image": image, "text_input": question}, prompt="Question: {} Answer:")
'''

# examples/blip2_feature_extraction.ipynb
FEATURES = '''
from lavis.models import load_model_and_preprocess
model, vis_processors, txt_processors = load_model_and_preprocess(name="blip2_feature_extractor", model_type="pretrain", is_eval=True, device=device)
caption = "a large fountain spewing water into the air"
image = vis_processors["eval"](raw_image).unsqueeze(0).to(device)
text_input = txt_processors["eval"](caption)
sample = {"image": image, "text_input": [text_input]}

features_multimodal = model.extract_features(sample)
print(features_multimodal.multimodal_embeds.shape)

features_image = model.extract_features(sample, mode="image")
features_text = model.extract_features(sample, mode="text")
print(features_image.image_embeds.shape)
print(features_text.text_embeds.shape)

# low-dimensional projected features
print(features_image.image_embeds_proj.shape)
print(features_text.text_embeds_proj.shape)
similarity = (features_image.image_embeds_proj @ features_text.text_embeds_proj[:,0,:].t()).max()
print(similarity)
'''

# examples/blip2_image_text_matching.ipynb
MATCHING = '''
from lavis.models import load_model_and_preprocess
caption = "merlion in Singapore"
model, vis_processors, text_processors = load_model_and_preprocess("blip2_image_text_matching", "pretrain", device=device, is_eval=True)
img = vis_processors["eval"](raw_image).unsqueeze(0).to(device)
txt = text_processors["eval"](caption)
itm_output = model({"image": img, "text_input": txt}, match_head="itm")
itm_scores = torch.nn.functional.softmax(itm_output, dim=1)
print(f'The image and text are matched with a probability of {itm_scores[:, 1].item():.3%}')
itc_score = model({"image": img, "text_input": txt}, match_head='itc')
print('The image feature and text feature has a cosine similarity of %.4f'%itc_score)
'''


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def lavis_env(hf_opt_folder, hf_itm_folder, tmp_path, monkeypatch):
    opt, itm = hf_opt_folder, hf_itm_folder
    monkeypatch.setenv(lavis.ENV_VAR, json.dumps({
        "blip2_opt:pretrain_opt2.7b": str(opt),
        "blip2_feature_extractor:pretrain": str(itm),
        "blip2_image_text_matching:pretrain": str(itm),
    }))
    monkeypatch.chdir(tmp_path)
    T.save_sample_photos(tmp_path)
    Image.open(tmp_path / "china.jpg").save(tmp_path / "merlion.png")
    return opt, itm


def run_snippet(snippet: str) -> dict:
    assert IMPORT_LAVIS in snippet
    namespace: dict = {}
    exec(SETUP + snippet.replace(IMPORT_LAVIS, IMPORT_OURS), namespace)  # noqa: S102 - our own test snippets
    return namespace


def test_captioning_snippet_runs_and_matches_the_pipeline_api(lavis_env):
    ns = run_snippet(CAPTIONING)
    pipe, raw = ns["model"].pipeline, ns["raw_image"]
    assert ns["caption"] == pipe.caption(raw) and len(ns["caption"]) == 1
    assert ns["answer"] == pipe.caption(raw, prompt="Question: which city is this? Answer:")
    assert ns["chat"] == pipe.caption(raw, prompt=ns["prompt"])
    assert len(ns["follow_up"]) == 1 and len(ns["sampled"]) == 3
    assert all(isinstance(text, str) for text in ns["sampled"])


def test_vqa_snippet_runs_and_matches_the_pipeline_api(lavis_env):
    ns = run_snippet(VQA)
    pipe, raw = ns["model"].pipeline, ns["raw_image"]
    assert ns["question"] == "which city is this photo taken?"  # blip_caption: lowercased
    # LAVIS: without a prompt template the question itself is the prompt
    assert ns["answers"] == pipe.answer(raw, ns["question"], template="{}")
    assert ns["templated"] == pipe.answer(raw, ns["question"])


def test_feature_extraction_snippet_runs_with_lavis_shapes(lavis_env, capsys):
    ns = run_snippet(FEATURES)
    pipe, raw = ns["model"].pipeline, ns["raw_image"]
    q = T.NUM_QUERY_TOKENS
    assert ns["features_multimodal"].multimodal_embeds.shape == (1, q, 32)
    assert ns["features_image"].image_embeds.shape == (1, q, 32)
    assert ns["features_image"].image_embeds_proj.shape == (1, q, 16)
    length = ns["features_text"].text_embeds.shape[1]
    assert ns["features_text"].text_embeds_proj.shape == (1, length, 16)
    expected = pipe.match(raw, ns["text_input"], method="itc")
    torch.testing.assert_close(ns["similarity"].reshape(1).cpu(), expected, rtol=0, atol=1e-5)
    assert f"torch.Size([1, {q}, 32])" in capsys.readouterr().out


def test_image_text_matching_snippet_runs_and_matches_the_pipeline_api(lavis_env, capsys):
    ns = run_snippet(MATCHING)
    pipe, raw = ns["model"].pipeline, ns["raw_image"]
    assert ns["itm_output"].shape == (1, 2) and ns["itc_score"].shape == (1, 1)
    txt = ns["txt"]
    torch.testing.assert_close(ns["itm_scores"][:, 1].cpu(), pipe.match(raw, txt), rtol=0, atol=1e-6)
    torch.testing.assert_close(ns["itc_score"][:, 0].cpu(), pipe.match(raw, txt, method="itc"), rtol=0, atol=1e-6)
    out = capsys.readouterr().out
    assert "matched with a probability of" in out and "cosine similarity of" in out


def test_processors_follow_lavis(lavis_env):
    assert lavis.BlipCaptionProcessor()("A  Large fountain: spewing water (into) the air!") == \
        "a large fountain spewing water into the air"
    assert lavis.BlipCaptionProcessor(max_words=3)("one two three four") == "one two three"
    assert lavis.BlipQuestionProcessor()("Which city is this photo taken?") == "which city is this photo taken?"


def test_names_resolve_to_presets_and_overrides(monkeypatch, tmp_path):
    monkeypatch.delenv(lavis.ENV_VAR, raising=False)
    assert lavis.resolve("blip2_opt", "pretrain_opt2.7b") == ("blip2-opt-2.7b", "opt", "")
    assert lavis.resolve("blip2_opt", "caption_coco_opt6.7b")[::2] == ("blip2-opt-6.7b-coco", "a photo of")
    assert lavis.resolve("blip2_image_text_matching", "coco")[:2] == ("blip2-itm-vit-g-coco", "qformer")
    overrides = tmp_path / "models.json"
    overrides.write_text(json.dumps({"blip2:pretrain": "/models/from-file"}))
    monkeypatch.setenv(lavis.ENV_VAR, str(overrides))
    assert lavis.resolve("blip2", "pretrain")[0] == "/models/from-file"
    lavis.register("blip2", "pretrain", tmp_path / "registered")
    try:
        assert lavis.resolve("blip2", "pretrain")[0] == str(tmp_path / "registered")
    finally:
        lavis.unregister("blip2", "pretrain")


def test_unknown_and_unsupported_names_are_explained(monkeypatch):
    monkeypatch.delenv(lavis.ENV_VAR, raising=False)
    with pytest.raises(Blip2Error, match=r"unknown LAVIS BLIP-2 model name 'blip3'; known: blip2, blip2_feature_"):
        lavis.load_model_and_preprocess("blip3", "pretrain")
    with pytest.raises(Blip2Error, match=r"'blip2_opt' has no model_type 'pretrain_opt1b'; known: caption_coco_"):
        lavis.load_model_and_preprocess("blip2_opt", "pretrain_opt1b")
    with pytest.raises(Blip2Error, match=r"blip2_t5/pretrain_flant5xl_vitL cannot be loaded: there is no Hugging Face checkpoint of the ViT-L FlanT5"):
        lavis.load_model_and_preprocess("blip2_t5", "pretrain_flant5xl_vitL")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(Blip2Error, match=r"Salesforce/blip2-opt-2.7b: no such local file or folder, and cannot resolve it as a hub id \(HF_HUB_OFFLINE"):
        lavis.load_model_and_preprocess("blip2_opt", "pretrain_opt2.7b")


def test_a_name_pointed_at_the_wrong_kind_of_checkpoint_is_refused(lavis_env):
    opt, itm = lavis_env
    lavis.register("blip2_feature_extractor", "coco", opt)
    try:
        with pytest.raises(Blip2Error, match=r"blip2_feature_extractor/coco -> .*: its Q-Former has no ITC / ITM"):
            lavis.load_model_and_preprocess("blip2_feature_extractor", "coco")
    finally:
        lavis.unregister("blip2_feature_extractor", "coco")
    model, _, _ = lavis.load_model_and_preprocess("blip2_feature_extractor", "pretrain")
    with pytest.raises(Blip2Error, match=r"generate is not available on a Q-Former feature / matching model"):
        model.generate({"image": torch.zeros(1, 3, T.IMAGE_SIZE, T.IMAGE_SIZE)})
