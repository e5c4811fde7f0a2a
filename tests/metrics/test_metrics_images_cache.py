"""Image sets (folders, manifests, bad files, mixed sizes) and the on-disk feature cache."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from minority.errors import MinorityError
from minority.metrics import FeatureCache, clean_resize, extract_features, open_image_folder
from minority.metrics.images import BadImageError


def test_clean_resize_follows_clean_fid():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(20, 30, 3), dtype=np.uint8)
    out = clean_resize(img, (11, 13))
    assert out.shape == (3, 11, 13) and out.dtype == np.float32
    for c in range(3):  # per-channel float32 PIL bicubic, clipped, not re-quantised
        ref = np.asarray(Image.fromarray(img[:, :, c].astype(np.float32)).resize((13, 11), Image.BICUBIC)).clip(0, 255)
        np.testing.assert_array_equal(out[c], ref)
    assert not np.allclose(out, np.round(out))
    np.testing.assert_array_equal(clean_resize(img, (20, 30)), img.transpose(2, 0, 1))


def test_folder_and_generation_output(imgs, tmp_path, gen_dir):
    plain = imgs.folder(tmp_path / "plain", imgs.random(3) + imgs.random(2, size=(24, 20), mode="L"))
    s = open_image_folder(plain)
    assert len(s) == 5 and not s.has_manifest
    assert s.load(4).shape == (24, 20, 3)  # gray converted to RGB; mixed sizes are fine
    g = open_image_folder(gen_dir)
    assert g.has_manifest and g.keys[0] == "images/00000_000000.png"
    assert g.prompts()[0] == "a dark thing" and g.groups()[:5] == [0, 0, 0, 0, 1]
    assert len(open_image_folder(gen_dir / "images")) == 12  # images/ given directly still finds the manifest
    with pytest.raises(MinorityError, match="no manifest.jsonl"):
        s.prompts()


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(MinorityError, match="does not exist"):
        open_image_folder(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MinorityError, match="no images in"):
        open_image_folder(tmp_path / "empty")


def test_corrupt_image_is_named_and_skippable(imgs, tmp_path, pixel_extractor):
    folder = imgs.folder(tmp_path / "imgs", imgs.random(4))
    (folder / "img_0002.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    s = open_image_folder(folder)
    with pytest.raises(BadImageError, match="img_0002.png.*--skip-bad"):
        extract_features(s, pixel_extractor, batch_size=2, progress=False)
    out = extract_features(s, pixel_extractor, batch_size=2, skip_bad=True, progress=False)
    assert out["valid"].tolist() == [True, True, False, True]
    assert np.isnan(out["features"][2]).all() and np.isfinite(out["features"][[0, 1, 3]]).all()


def test_manifest_pointing_to_missing_file(imgs, tmp_path, pixel_extractor):
    gen = imgs.generation(tmp_path / "gen", ["p"], 3)
    (gen / "images" / "00000_000001.png").unlink()
    with pytest.raises(BadImageError, match="00000_000001.png is missing"):
        extract_features(open_image_folder(gen), pixel_extractor, progress=False)


def test_feature_cache_hits_and_invalidation(imgs, tmp_path, pixel_extractor):
    folder = imgs.folder(tmp_path / "imgs", imgs.random(5))
    cache = FeatureCache(tmp_path / "cache")
    first = extract_features(open_image_folder(folder), pixel_extractor, batch_size=2, cache=cache, progress=False)
    calls = pixel_extractor.calls
    assert cache.misses == 1 and cache.hits == 0 and len(list((tmp_path / "cache").glob("*.npz"))) == 1
    again = extract_features(open_image_folder(folder), pixel_extractor, batch_size=2, cache=cache, progress=False)
    assert cache.hits == 1 and pixel_extractor.calls == calls  # loaded, not recomputed
    np.testing.assert_array_equal(first["features"], again["features"])
    imgs.random(1, seed=99)[0].save(folder / "img_0003.png")  # change one file's content
    changed = extract_features(open_image_folder(folder), pixel_extractor, batch_size=2, cache=cache, progress=False)
    assert cache.misses == 2 and pixel_extractor.calls > calls
    assert not np.allclose(changed["features"][3], first["features"][3])
    np.testing.assert_array_equal(changed["features"][:3], first["features"][:3])
    with __import__("torch").no_grad():
        pixel_extractor.scale.fill_(2.0)  # other weights: another key
    pixel_extractor._cache_id = None
    extract_features(open_image_folder(folder), pixel_extractor, cache=cache, progress=False)
    assert cache.misses == 3
