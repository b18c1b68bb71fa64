"""Training augmentation from ``plan.training.augmentation``, built from batchgenerators transforms.

The paper's set is a left–right flip and an in-plane rotation of ±10°. The extended set (scaling, elastic
deformation, gamma, noise, blur, brightness, contrast, simulated low in-plane resolution) is switched on entry
by entry in the plan. Every enabled transform is applied to a sample with probability ``p_per_sample``, or with its
own from ``probabilities`` (by entry name); the flip mirrors with probability 0.5. Labels are moved with
nearest-neighbour interpolation (order 0), so the ignore value 255 stays exact, and pixels rotated in from outside
the slice become background.
"""
from __future__ import annotations

from typing import List, Sequence

import numpy as np
from batchgenerators.transforms.abstract_transforms import AbstractTransform, Compose
from batchgenerators.transforms.color_transforms import (
    BrightnessMultiplicativeTransform,
    ContrastAugmentationTransform,
    GammaTransform,
)
from batchgenerators.transforms.noise_transforms import GaussianBlurTransform, GaussianNoiseTransform
from batchgenerators.transforms.resample_transforms import SimulateLowResolutionTransform
from batchgenerators.transforms.spatial_transforms import MirrorTransform, SpatialTransform

from deepwml.planning.plan import AugmentationPlan

#: used when the plan sets elastic_alpha but leaves elastic_sigma empty (pixels; nnU-Net's range)
DEFAULT_ELASTIC_SIGMA = (9.0, 13.0)


def probability(aug: AugmentationPlan, entry: str) -> float:
    """The probability that the transform of ``entry`` is applied to a sample."""
    return float(aug.probabilities.get(entry, aug.p_per_sample))


def spatial_transform(aug: AugmentationPlan, patch_size: Sequence[int]) -> List[AbstractTransform]:
    """Rotation, scaling and elastic deformation in one resampling pass (empty when all are off)."""
    rotate = aug.rotation_deg > 0
    scale = aug.scale is not None
    elastic = aug.elastic_alpha is not None
    if not (rotate or scale or elastic):
        return []
    angle = np.deg2rad(aug.rotation_deg)
    return [
        SpatialTransform(
            list(patch_size),
            do_elastic_deform=elastic,
            alpha=tuple(aug.elastic_alpha or (0.0, 0.0)),
            sigma=tuple(aug.elastic_sigma or DEFAULT_ELASTIC_SIGMA),
            do_rotation=rotate,
            angle_x=(-angle, angle),
            angle_y=(0.0, 0.0),
            angle_z=(0.0, 0.0),
            do_scale=scale,
            scale=tuple(aug.scale or (1.0, 1.0)),
            # background stays background: the image edge is continued, labels outside become 0
            border_mode_data="nearest",
            order_data=3,
            border_mode_seg="constant",
            border_cval_seg=0,
            order_seg=0,
            random_crop=False,
            p_el_per_sample=probability(aug, "elastic_alpha"),
            p_scale_per_sample=probability(aug, "scale"),
            p_rot_per_sample=probability(aug, "rotation_deg"),
        )
    ]


def intensity_transforms(aug: AugmentationPlan) -> List[AbstractTransform]:
    """Intensity and resolution transforms the plan enables, in nnU-Net's order."""
    out: List[AbstractTransform] = []
    if aug.noise_variance is not None:
        out.append(GaussianNoiseTransform(noise_variance=tuple(aug.noise_variance), p_per_sample=probability(aug, "noise_variance")))
    if aug.blur_sigma is not None:
        out.append(GaussianBlurTransform(tuple(aug.blur_sigma), different_sigma_per_channel=True, p_per_channel=1.0,
                                         p_per_sample=probability(aug, "blur_sigma")))
    if aug.brightness is not None:
        out.append(BrightnessMultiplicativeTransform(multiplier_range=tuple(aug.brightness), per_channel=True,
                                                     p_per_sample=probability(aug, "brightness")))
    if aug.contrast is not None:
        out.append(ContrastAugmentationTransform(contrast_range=tuple(aug.contrast), p_per_sample=probability(aug, "contrast")))
    if aug.low_resolution is not None:
        out.append(
            SimulateLowResolutionTransform(
                zoom_range=tuple(aug.low_resolution), per_channel=True, p_per_channel=1.0,
                order_downsample=0, order_upsample=3, p_per_sample=probability(aug, "low_resolution"),
            )
        )
    if aug.gamma is not None:
        out.append(GammaTransform(tuple(aug.gamma), invert_image=False, per_channel=True, retain_stats=True,
                                  p_per_sample=probability(aug, "gamma")))
    return out


def build_transforms(aug: AugmentationPlan, patch_size: Sequence[int]) -> Compose:
    """The whole augmentation pipeline for 'data' [B,1,H,W] float32 and 'seg' [B,1,H,W] (0/1/255)."""
    transforms = spatial_transform(aug, patch_size) + intensity_transforms(aug)
    if aug.mirror_lr:
        # spatial axis 1 is x: columns run patient right → left in the canonical cache orientation
        transforms.append(MirrorTransform(axes=(1,)))
    return Compose(transforms)
