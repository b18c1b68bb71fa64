"""Random-texture augmentation: each chosen image through a freshly drawn shallow convolutional network, blended in.

After Ouyang et al.'s global intensity non-linear augmentation (GIN, IEEE TMI 2022): a few layers of random 1×1 or
3×3 convolutions with leaky ReLUs between them turn an image into one with the same anatomy and new local textures
and tissue contrasts. A model trained on the blend ``w * net(image) + (1 - w) * image`` (w drawn per sample) cannot
lean on the fine texture of its training scanner or generator, the cue that does not carry over to real scans. On
FLAIR a lesion is defined by being bright, so the network's output is turned over (negated) when it correlates
negatively with the image inside the head: textures change, the polarity of the anatomy does not. The blend keeps each
channel's mean and standard deviation. Numpy only, drawn from numpy's global generator like batchgenerators'
transforms, so batches stay reproducible per worker seed.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np
from batchgenerators.transforms.abstract_transforms import AbstractTransform
from numpy.lib.stride_tricks import sliding_window_view

#: layers of the random network (its depth is drawn from this range, inclusive)
LAYERS = (2, 4)
#: channels between its layers
HIDDEN_CHANNELS = 2
#: slope of its leaky ReLUs
LEAK = 0.2


def _conv(x: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Correlate ``x`` (Cin, H, W) with ``weights`` (Cout, Cin, k, k), edge-padded to keep H × W."""
    k = weights.shape[-1]
    if k == 1:
        return np.tensordot(weights[:, :, 0, 0], x, axes=(1, 0))
    padded = np.pad(x, ((0, 0), (k // 2, k // 2), (k // 2, k // 2)), mode="edge")
    windows = sliding_window_view(padded, (k, k), axis=(1, 2))  # Cin, H, W, k, k
    return np.einsum("oikl,ihwkl->ohw", weights, windows, optimize=True)


Network = List[Tuple[np.ndarray, np.ndarray]]


def draw_network() -> Network:
    """A random shallow network (weights, biases per layer) from numpy's global generator."""
    depth = np.random.randint(LAYERS[0], LAYERS[1] + 1)
    layers: Network = []
    c_in = 1
    for layer in range(depth):
        c_out = 1 if layer == depth - 1 else HIDDEN_CHANNELS
        k = 3 if np.random.uniform() < 0.5 else 1
        weights = np.random.normal(0.0, 1.0 / np.sqrt(c_in * k * k), (c_out, c_in, k, k)).astype(np.float32)
        layers.append((weights, np.random.normal(0.0, 0.1, (c_out, 1, 1)).astype(np.float32)))
        c_in = c_out
    return layers


def run_network(network: Network, image: np.ndarray) -> np.ndarray:
    """``image`` (H, W) through ``network``, (H, W) float32."""
    x = image[None].astype(np.float32)
    for i, (weights, bias) in enumerate(network):
        x = _conv(x, weights) + bias
        if i < len(network) - 1:
            x = np.where(x > 0, x, LEAK * x)
    return x[0]


def _standardised(x: np.ndarray, where: np.ndarray) -> np.ndarray:
    """``x`` shifted and scaled to mean 0 and standard deviation 1 over ``where`` (unchanged spread when flat)."""
    values = x[where]
    sd = float(values.std())
    return (x - float(values.mean())) / (sd if sd > 1e-6 else 1.0)


def textured(image: np.ndarray, weight: float, network: Network) -> np.ndarray:
    """Blend ``weight`` of ``network``'s output of ``image`` (H, W) into it, keeping its polarity, mean and spread."""
    if weight <= 0:
        return image
    # inside the head: the normalised background is flat and would dominate the correlation
    head = image > np.percentile(image, 20)
    if head.sum() < 16:
        head = np.ones(image.shape, bool)
    out = _standardised(run_network(network, image), head)
    reference = _standardised(image, head)
    if float(np.mean(out[head] * reference[head])) < 0:
        out = -out
    mean, sd = float(image.mean()), float(image.std())
    blend = weight * out + (1.0 - weight) * reference
    blend = (blend - float(blend.mean())) / max(float(blend.std()), 1e-6)
    return (blend * sd + mean).astype(image.dtype, copy=False)


class RandomTextureTransform(AbstractTransform):
    """Give each sample, with probability ``p_per_sample``, a random texture blended in with a weight from ``weight_range``."""

    def __init__(self, weight_range: Sequence[float], p_per_sample: float, data_key: str = "data") -> None:
        self.weight_range = (float(weight_range[0]), float(weight_range[1]))
        self.p_per_sample = float(p_per_sample)
        self.data_key = data_key

    def __call__(self, **data_dict):
        """Transform ``data_dict[data_key]`` (B, C, H, W) in place; one network per sample, so the neighbouring slices
        of a 2.5D sample get the same texture; labels untouched."""
        data = data_dict[self.data_key]
        for b in range(data.shape[0]):
            if np.random.uniform() < self.p_per_sample:
                weight = np.random.uniform(*self.weight_range)
                network = draw_network()
                for c in range(data.shape[1]):
                    data[b, c] = textured(data[b, c], weight, network)
        return data_dict
