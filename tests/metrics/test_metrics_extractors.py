"""Feature extractors: EfficientNet-Lite0 real weights, FID Inception loading, tiny hub architectures, registry."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from minority.errors import MinorityError
from minority.metrics import clean_resize, load_extractor, register_extractor
from minority.metrics.extractors.classifier import ClassifierExtractor
from minority.metrics.images import load_rgb


def _sample_photo(name: str) -> np.ndarray:
    import matplotlib

    return load_rgb(os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "sample_data", name))


def test_efficientnet_lite0_real_weights_classify_a_photo():
    """Smoke test that the real ImageNet weights are loaded: Grace Hopper's photo is a 'military uniform'."""
    ext = load_extractor("efficientnet-lite0")
    photo = _sample_photo("grace_hopper.jpg")  # matplotlib's sample photo (600×512, not square)
    other = np.full((64, 64, 3), 200, np.uint8)
    x = torch.from_numpy(np.stack([clean_resize(photo, ext.input_size), clean_resize(other, ext.input_size)]))
    with torch.no_grad():
        out = ext(x)
    assert out["features"].shape == (2, 1280) and out["spatial"].shape == (2, 7 * 14 * 14)
    assert out["logits"].shape == (2, 1000)
    assert out["logits"][0].argmax().item() == 652  # ImageNet class 652: military uniform
    assert out["logits"][0].softmax(-1)[652] > 0.2
    assert not torch.allclose(out["features"][0], out["features"][1])


def test_efficientnet_missing_weights_file():
    with pytest.raises(MinorityError, match="not found"):
        load_extractor("efficientnet-lite0", weights="/nonexistent/lite0.pth")


def test_fid_inception_loads_state_dict_from_path_and_url(tmp_path, monkeypatch):
    from minority.metrics.extractors.inception import FIDInceptionV3, InceptionFID

    torch.manual_seed(0)
    net = FIDInceptionV3()
    state = net.state_dict()
    assert not any(k.startswith("AuxLogits") for k in state) and state["fc.weight"].shape == (1008, 2048)
    path = tmp_path / "pt_inception-2015-12-05-test.pth"
    torch.save(state, path)
    ext = load_extractor("inception", weights=path)
    x = torch.rand(1, 3, 299, 299) * 255
    with torch.no_grad():
        out = ext(x)
        ref_pool, ref_mixed, _ = net.eval()((x - 128) / 128)
    assert out["features"].shape == (1, 2048) and out["spatial"].shape == (1, 7 * 17 * 17)
    torch.testing.assert_close(out["features"], ref_pool)
    torch.testing.assert_close(out["spatial"], ref_mixed[:, :7].flatten(1))
    # a URL is fetched once into the torch hub cache (file:// here: no network)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    InceptionFID(weights=path.as_uri())
    assert (tmp_path / "torch-home" / "hub" / "checkpoints" / path.name).is_file()
    with pytest.raises(MinorityError, match="pt_inception-2015-12-05-6726825d.pth"):
        load_extractor("inception", weights=tmp_path / "missing.pth")
    bad = tmp_path / "bad.pth"
    torch.save({"x": torch.zeros(1)}, bad)
    with pytest.raises(MinorityError, match="do not fit"):
        load_extractor("inception", weights=bad)


def test_tiny_clip_scores_equal_manual_computation(tiny_clip_dir):
    from transformers import CLIPModel, CLIPTokenizer

    from minority.metrics import clip_score, pick_score
    from minority.metrics.extractors.hf import load_clip

    folder = tiny_clip_dir
    ext = load_clip(weights=folder, name="clip-vit-l14")
    pick = load_clip(weights=folder, name="pickscore")
    assert ext.input_size == (32, 32)
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, size=(40, 48, 3), dtype=np.uint8) for _ in range(3)]
    prompts = ["a photo of a sneaker", "a bag", "an ankle boot on a dark background"]
    x = torch.from_numpy(np.stack([clean_resize(i, (32, 32)) for i in imgs]))
    with torch.no_grad():
        got_clip = clip_score(ext(x)["features"], ext.text_embeds(prompts))
        got_pick = pick_score(pick.image_embeds(x), pick.text_embeds(prompts), pick.logit_scale)
        # manual: the model's own sub-modules, normalised pixels, tokenizer ids
        model = CLIPModel.from_pretrained(folder).eval()
        tok = CLIPTokenizer.from_pretrained(folder)
        mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
        std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
        pix = (x / 255 - mean) / std
        img = model.visual_projection(model.vision_model(pixel_values=pix).pooler_output)
        ids = tok(prompts, padding="max_length", max_length=77, return_tensors="pt")
        hidden = model.text_model(input_ids=ids["input_ids"], attention_mask=ids["attention_mask"]).last_hidden_state
        eos = (ids["input_ids"] == 49407).int().argmax(1)  # first end-of-text token
        txt = model.text_projection(hidden[torch.arange(3), eos])
        cos = torch.nn.functional.cosine_similarity(img.double(), txt.double())
    torch.testing.assert_close(got_clip, 100 * cos.clamp_min(0), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(got_pick, 100.0 * cos, rtol=1e-5, atol=1e-4)
    assert pick.logit_scale == pytest.approx(100.0, rel=1e-5)


def test_hub_extractor_offline_error_names_weights(monkeypatch):
    from minority.metrics.extractors.hf import load_clip, load_vision

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MinorityError, match="huggingface-cli download openai/clip-vit-large-patch14"):
        load_clip(local_files_only=True)
    with pytest.raises(MinorityError, match="facebook/dino-vitb8"):
        load_extractor("dino-vitb8")
    with pytest.raises(MinorityError, match="does not exist"):
        load_vision(weights="/no/such/resnet", name="resnet50")


def test_tiny_resnet_and_vit_through_the_real_loaders(tmp_path):
    from transformers import Dinov2Config, Dinov2Model, ResNetConfig, ResNetModel, ViTConfig, ViTModel

    torch.manual_seed(0)
    prep = {"size": {"height": 32, "width": 32}, "do_center_crop": False,
            "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}
    folders = {}
    for name, model in {
        "resnet50": ResNetModel(ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic")),
        "dino-vitb8": ViTModel(ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1,
                                         num_attention_heads=4, intermediate_size=37), add_pooling_layer=False),
        "dinov2": Dinov2Model(Dinov2Config(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1,
                                           num_attention_heads=4, mlp_ratio=1)),
    }.items():
        folders[name] = tmp_path / name
        model.save_pretrained(folders[name])
        (folders[name] / "preprocessor_config.json").write_text(json.dumps(prep))
    x = torch.rand(2, 3, 32, 32) * 255
    res = load_extractor("resnet50", weights=folders["resnet50"])
    dino = load_extractor("dino-vitb8", weights=folders["dino-vitb8"])
    from minority.metrics.extractors.hf import load_vision

    dinov2 = load_vision(weights=folders["dinov2"], name="dinov2")
    with torch.no_grad():
        r, d, d2 = res(x), dino(x), dinov2(x)
        pix = (x / 255 - torch.tensor(prep["image_mean"]).view(1, 3, 1, 1)) / torch.tensor(prep["image_std"]).view(1, 3, 1, 1)
        cls = ViTModel.from_pretrained(folders["dino-vitb8"], add_pooling_layer=False).eval()(pixel_values=pix)
    assert r["features"].shape == (2, 16) and "spatial" in r
    assert d["features"].shape == (2, 32) and d2["features"].shape == (2, 32)
    torch.testing.assert_close(d["features"], cls.last_hidden_state[:, 0])


def test_registry_and_classifier_wrapping(tmp_path):
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(3 * 8 * 8, 5)

        def features(self, x):
            return torch.relu(self.lin(x.flatten(1)))

        def forward(self, x):
            return self.features(x)[:, :3]

    net = Net()
    ext = ClassifierExtractor(net, name="toy", input_size=(8, 8), class_names=("a", "b", "c"))
    register_extractor("toy-classifier", lambda weights=None, device="cpu": ext)
    assert load_extractor("toy-classifier") is ext
    wrapped = load_extractor(Net())  # a bare module with features(x) is wrapped
    assert isinstance(wrapped, ClassifierExtractor)
    x = torch.rand(2, 3, 8, 8) * 255
    out = ext(x)
    torch.testing.assert_close(out["features"], net.features(x / 127.5 - 1))
    assert out["logits"].shape == (2, 3)
    with pytest.raises(MinorityError, match="unknown feature extractor"):
        load_extractor("no-such-net")
    with pytest.raises(MinorityError, match="features"):
        ClassifierExtractor(torch.nn.Linear(2, 2))


def test_fashion_classifier_loader(tmp_path):
    clf = pytest.importorskip("minority.nets.fashion_classifier")
    torch.manual_seed(0)
    model = clf.FashionClassifier(clf.ClassifierConfig(channels=(4, 8), feature_dim=16)).eval()
    folder = clf.save_classifier(model, tmp_path / "clf")
    ext = load_extractor("fashion-classifier", weights=folder)
    assert ext.input_size == (32, 32) and len(ext.class_names) == 10 and "sneaker" in ext.class_synonyms[7]
    x = torch.rand(3, 3, 32, 32) * 255
    with torch.no_grad():
        out = ext(x)
        torch.testing.assert_close(out["features"], model.features(x / 127.5 - 1))
        torch.testing.assert_close(out["logits"], model(x / 127.5 - 1))
