"""A briefly trained toy network for tests that need real learned weights (e.g. int8 agreement with fp32): a small
U-Net taught in a few seconds to find bright discs ('lesions') in noisy 2D images."""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch
from torch import nn

from deepwml.planning.plan import Plan


def disc_images(n: int, size: int = 64, seed: int = 0, discs: Tuple[int, int] = (1, 4)) -> Tuple[np.ndarray, np.ndarray]:
    """``n`` float32 images [n, size, size] of smooth noise with bright discs, and their uint8 disc masks."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    noise = rng.normal(size=(n, size, size)).astype(np.float32)
    # a 3x3 box blur gives the noise some texture, as FLAIR has, so that the task is not a per-pixel threshold
    padded = np.pad(noise, ((0, 0), (1, 1), (1, 1)), mode="edge")
    images = sum(padded[:, i:i + size, j:j + size] for i in range(3) for j in range(3)) / 3.0
    masks = np.zeros((n, size, size), dtype=np.uint8)
    for k in range(n):
        for _ in range(rng.integers(discs[0], discs[1] + 1)):
            cy, cx = rng.integers(8, size - 8, 2)
            radius = rng.uniform(2.0, 6.0)
            disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2
            masks[k][disc] = 1
            images[k][disc] += rng.uniform(2.0, 3.5)
    return images.astype(np.float32), masks


def fit(net: nn.Module, images: np.ndarray, masks: np.ndarray, iterations: int, batch: int = 8, seed: int = 0,
        pool: Optional[np.ndarray] = None) -> nn.Module:
    """Train ``net`` ``iterations`` steps (BCE + soft Dice, Adam 3e-3) on batches of slices drawn from ``pool``
    (default: every slice) of ``images`` [N, H, W] and binary ``masks``; returned in eval mode."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    pool = np.arange(len(images)) if pool is None else pool
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(iterations):
        idx = rng.choice(pool, batch, replace=len(pool) < batch)
        x, y = torch.from_numpy(images[idx])[:, None], torch.from_numpy(masks[idx].astype(np.float32))[:, None]
        logits = net(x)
        prob = torch.sigmoid(logits)
        soft_dice = 1 - (2 * (prob * y).sum() + 1) / (prob.sum() + y.sum() + 1)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y) + soft_dice
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return net.eval()


def trained_disc_network(plan: Plan, iterations: int = 120, seed: int = 0, batch: int = 8) -> nn.Module:
    """The plan's network trained ``iterations`` steps on disc_images; in eval mode."""
    from deepwml.models import build_network

    torch.manual_seed(seed)
    images, masks = disc_images(64, plan.preprocessing.matrix[0], seed)
    return fit(build_network(plan.network), images, masks, iterations, batch, seed)
