"""Random-texture augmentation: new textures, same anatomy polarity and intensity statistics; plan option and hash."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from deepwml.planning.plan import AugmentationPlan, Plan, PlanError
from deepwml.training.augmentation import build_transforms
from deepwml.training.random_texture import RandomTextureTransform, draw_network, run_network, textured
from training_fixtures import tiny_plan

SHIPPED = Path(__file__).resolve().parents[1] / "deepwml" / "pretrained" / "wmh_flair2d"


def _head_with_lesion(size: int = 48) -> np.ndarray:
    """A flat background, a textured 'head' and one bright 'lesion' inside it."""
    yy, xx = np.mgrid[:size, :size]
    img = np.full((size, size), -2.0, np.float32)
    head = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 2.5) ** 2
    rng = np.random.default_rng(0)
    img[head] = 0.3 * rng.standard_normal(int(head.sum()))
    img[(yy - 20) ** 2 + (xx - 26) ** 2 < 9] = 2.0
    return img


def _corr_inside(a: np.ndarray, b: np.ndarray, where: np.ndarray) -> float:
    return float(np.corrcoef(a[where], b[where])[0, 1])


def test_texture_keeps_mean_spread_and_the_polarity_of_the_anatomy():
    img = _head_with_lesion()
    head = img > -2.0
    np.random.seed(3)
    for _ in range(40):
        out = textured(img, 1.0, draw_network())
        assert out.shape == img.shape and out.dtype == img.dtype
        assert out.mean() == pytest.approx(img.mean(), abs=1e-4) and out.std() == pytest.approx(img.std(), rel=1e-4)
        # a network output anti-correlated with the image is turned over: a bright lesion is never made dark overall
        assert _corr_inside(out, img, head) >= -1e-6


def test_texture_changes_the_image_more_with_a_larger_weight():
    img = _head_with_lesion()
    head = img > -2.0
    np.random.seed(5)
    networks = [draw_network() for _ in range(20)]
    half = np.median([_corr_inside(textured(img, 0.3, n), img, head) for n in networks])
    full = np.median([_corr_inside(textured(img, 1.0, n), img, head) for n in networks])
    assert full < half < 0.999
    assert np.array_equal(textured(img, 0.0, networks[0]), img)


def test_network_is_convolutional_and_keeps_the_image_size():
    np.random.seed(0)
    network = draw_network()
    img = _head_with_lesion()
    out = run_network(network, img)
    assert out.shape == img.shape
    # translation equivariance away from the edges: shifting the input shifts the output
    shifted = run_network(network, np.roll(img, 3, axis=1))
    assert np.allclose(shifted[:, 10:40], np.roll(out, 3, axis=1)[:, 10:40], atol=1e-5)


def test_transform_is_reproducible_leaves_labels_and_gives_slices_of_one_sample_one_texture():
    img = _head_with_lesion()
    data = np.stack([np.stack([img, img]), np.stack([img, img])]).astype(np.float32)  # B 2, C 2 (a 2.5D sample)
    seg = np.zeros((2, 1, 48, 48), np.float32)
    seg[:, :, 18:23, 24:29] = 1
    transform = RandomTextureTransform([1.0, 1.0], p_per_sample=1.0)
    np.random.seed(11)
    a = transform(data=data.copy(), seg=seg.copy())
    np.random.seed(11)
    b = transform(data=data.copy(), seg=seg.copy())
    assert np.array_equal(a["data"], b["data"]) and np.array_equal(a["seg"], seg)
    assert np.array_equal(a["data"][0, 0], a["data"][0, 1])
    assert not np.allclose(a["data"][0, 0], img)
    never = RandomTextureTransform([1.0, 1.0], p_per_sample=0.0)(data=data.copy())
    assert np.array_equal(never["data"], data)


def test_plan_switches_it_on_and_validates_it():
    assert not any(isinstance(t, RandomTextureTransform) for t in build_transforms(AugmentationPlan(), (32, 32)).transforms)
    on = build_transforms(AugmentationPlan(random_texture=[0.0, 0.8], p_random_texture=0.4), (32, 32)).transforms
    texture = [t for t in on if isinstance(t, RandomTextureTransform)]
    assert len(texture) == 1 and texture[0].weight_range == (0.0, 0.8) and texture[0].p_per_sample == 0.4
    d = tiny_plan().to_dict()
    for bad, words in (([0.5], "random_texture"), ([0.9, 0.2], "random_texture"), ([0.0, 1.5], "random_texture")):
        d["training"]["augmentation"]["random_texture"] = bad
        with pytest.raises(PlanError, match=words):
            Plan.from_dict(d)
    d["training"]["augmentation"]["random_texture"] = [0.0, 0.8]
    d["training"]["augmentation"]["p_random_texture"] = 1.5
    with pytest.raises(PlanError, match="p_random_texture"):
        Plan.from_dict(d)


def test_plans_without_it_keep_their_hash():
    """The shipped model's checkpoint records its plan's hash; the new keys must not enter plans that leave them unset."""
    plan = Plan.load(SHIPPED / "plans.json")
    assert plan.hash() == json.loads((SHIPPED / "manifest.json").read_text())["plan_hash"]
    assert "random_texture" not in plan.to_dict()["training"]["augmentation"]
    d = plan.to_dict()
    d["training"]["augmentation"]["random_texture"] = [0.0, 0.8]
    textured_plan = Plan.from_dict(d)
    assert textured_plan.hash() != plan.hash()
    assert textured_plan.to_dict()["training"]["augmentation"]["random_texture"] == [0.0, 0.8]
