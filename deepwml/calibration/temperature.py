"""Temperature scaling with one temperature on each side of the threshold: probability = sigmoid(z / T(z)), where
z is the logit of the model's probability (the mean over its folds, as deepwml_predict computes it) and T(z) is
``below`` for z < 0 and ``above`` for z >= 0.

A network trained with BCE + Dice is usually over-confident where it calls lesion (among voxels it gives 0.99, far
fewer than 99 % are lesion) while its sure background is right. One temperature for both cannot fix the first
without making every background voxel less sure (the uncertainty map would light up the whole brain), so each side
gets its own, fitted by minimising the negative log-likelihood of labelled voxels the model did not learn from. The
map is continuous and increasing and keeps 0.5 where it is: it is applied voxel by voxel to the probabilities on the
input's grid, so the mask at threshold 0.5 is exactly the uncalibrated one, and a mask at another threshold is the
calibrated probability map's.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import numpy as np

from deepwml.utils.errors import DeepWMLError

#: (below, above): the temperatures of logits < 0 and >= 0; (1, 1) leaves the probabilities as the network gives them
Temperatures = Tuple[float, float]
UNCALIBRATED: Temperatures = (1.0, 1.0)
#: the search range of each temperature: far beyond any calibration a usable network needs
T_RANGE = (0.1, 10.0)
#: voxels below this probability (every member, uncalibrated) are background the model is sure of; 1 in
#: BACKGROUND_STRIDE of them is kept (with that weight), every other voxel is kept
SURE_PROBABILITY = 1e-3
BACKGROUND_STRIDE = 20
#: at most this many voxels per case are kept (a weak model is unsure almost everywhere): a uniform draw of them,
#: weighted up, bounds the fit's memory at about 13 bytes per kept voxel
MAX_VOXELS_PER_CASE = 250_000


def scaled(logits: np.ndarray, temperatures: Temperatures) -> np.ndarray:
    """Logits divided by their side's temperature, in their own float type (float64 for anything else)."""
    z = np.asarray(logits)
    z = z if z.dtype in (np.float32, np.float64) else z.astype(np.float64)
    below, above = temperatures
    return z * np.where(z >= 0, z.dtype.type(1.0 / above), z.dtype.type(1.0 / below))


def _sigmoid_in_place(z: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-z)) written over ``z`` (as 0.5 (1 + tanh(z / 2)): no overflow, exact 0 and 1 at -inf and inf)."""
    z *= z.dtype.type(0.5)
    np.tanh(z, out=z)
    z += z.dtype.type(1.0)
    z *= z.dtype.type(0.5)
    return z


def probabilities(logits: np.ndarray, temperatures: Temperatures) -> np.ndarray:
    """The calibrated probabilities of logits (float64)."""
    return _sigmoid_in_place(scaled(np.asarray(logits, dtype=np.float64), temperatures))


def logits_of(probs: np.ndarray) -> np.ndarray:
    """log(p / (1 - p)) in float64, p clipped to [1e-7, 1 - 1e-7] (float32 probabilities saturate there)."""
    p = np.clip(np.asarray(probs, dtype=np.float64), 1e-7, 1 - 1e-7)
    return np.log(p) - np.log1p(-p)


def _nonzero_box(values: np.ndarray) -> Tuple[slice, ...]:
    """The smallest box holding every non-zero value (an empty box when there is none)."""
    box = []
    for axis in range(values.ndim):
        hit = np.flatnonzero(values.any(axis=tuple(a for a in range(values.ndim) if a != axis)))
        box.append(slice(int(hit[0]), int(hit[-1]) + 1) if hit.size else slice(0, 0))
    return tuple(box)


def calibrate_probabilities(probs: np.ndarray, temperatures: Temperatures, in_place: bool = False) -> np.ndarray:
    """Probabilities (any shape) mapped through the calibration, float32; exact 0 and 1 stay, (1, 1) changes nothing.
    ``in_place``: written over ``probs`` when it is float32 (a map the caller has no further use for)."""
    probs = np.asarray(probs, dtype=np.float32)
    if tuple(temperatures) == UNCALIBRATED:
        return probs
    # a 25-slice 512² map is 26 MB: in place and with a boolean mask of sides, two such arrays fewer per case
    out = probs if in_place else probs.copy()
    # a reverted map is exactly 0 outside the head's box: only the box is transformed, in float32, with one
    # division and one logarithm (log(p / (1 - p)); 1 - p is exact in float32 where p is near 1) and the sigmoid's
    # halving folded into the temperature: about 22 ns a voxel on a 2-core EPYC against 36 for log(p) - log1p(-p).
    # log(0) = -inf and p / 0 = inf carry exact 0 and 1 through
    box = _nonzero_box(probs)
    p = probs[box]
    with np.errstate(divide="ignore"):
        z = np.subtract(np.float32(1.0), p)
        np.divide(p, z, out=z)
        np.log(z, out=z)
    below, above = temperatures
    # each side scaled where it is (a boolean mask is a quarter of a float32 map of factors)
    side = np.greater_equal(z, 0)
    np.multiply(z, np.float32(0.5 / above), out=z, where=side)
    np.logical_not(side, out=side)
    np.multiply(z, np.float32(0.5 / below), out=z, where=side)
    np.tanh(z, out=z)
    z += np.float32(1.0)
    z *= np.float32(0.5)
    out[box] = z
    return out


def uncalibrated(prob: float, temperatures: Temperatures) -> float:
    """The network's probability that calibration maps to ``prob`` (the inverse of calibrate_probabilities, one value)."""
    if not 0.0 < prob < 1.0:
        return float(prob)
    z = math.log(prob) - math.log1p(-prob)
    below, above = temperatures
    z *= above if z >= 0 else below
    return 0.5 * (1.0 + math.tanh(0.5 * z))


def negative_log_likelihood(logits: np.ndarray, labels: np.ndarray, weights: np.ndarray, temperatures: Temperatures) -> float:
    """Weighted mean binary cross-entropy of the calibrated probabilities."""
    p = np.clip(probabilities(logits, temperatures), 1e-7, 1 - 1e-7)
    loss = -np.where(np.asarray(labels, dtype=bool), np.log(p), np.log1p(-p))
    return float(np.sum(weights * loss) / np.sum(weights))


def fit_temperatures(logits: np.ndarray, labels: np.ndarray, weights: Optional[np.ndarray] = None) -> Temperatures:
    """(below, above) in T_RANGE minimising the weighted negative log-likelihood of ``labels`` (searched in log T)."""
    logits = np.asarray(logits, dtype=np.float64).ravel()
    labels = np.asarray(labels, dtype=bool).ravel()
    weights = np.ones(labels.shape, np.float64) if weights is None else np.asarray(weights, np.float64).ravel()
    if logits.shape != labels.shape or weights.shape != labels.shape:
        raise ValueError(f"logits {logits.shape}, labels {labels.shape} and weights {weights.shape} do not match")
    if not labels.any() or labels.all():
        raise DeepWMLError("calibration needs lesion and non-lesion voxels; the labelled cases hold only one kind")
    # imported here: scipy.optimize takes 0.2 s to import, and every prediction run imports this module for
    # calibrate_probabilities alone
    from scipy.optimize import minimize

    bounds = [(math.log(T_RANGE[0]), math.log(T_RANGE[1]))] * 2
    result = minimize(lambda s: negative_log_likelihood(logits, labels, weights, (math.exp(s[0]), math.exp(s[1]))),
                      x0=np.zeros(2), bounds=bounds, method="L-BFGS-B")
    return float(math.exp(result.x[0])), float(math.exp(result.x[1]))


def _draw(index: np.ndarray, n: int, rng: np.random.Generator) -> Tuple[np.ndarray, float]:
    """``n`` of ``index`` drawn uniformly without replacement (all of them when there are no more), and the weight
    each drawn one carries to stand for all."""
    if index.size <= n:
        return index, 1.0
    return np.sort(rng.choice(index, n, replace=False)), index.size / n


def sample_voxels(probs: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(logits, labels, weights) [n] of one case's probabilities and labels [N]: the voxels the model is unsure of or
    that are lesion, and 1 in BACKGROUND_STRIDE of the sure background, each part capped at half of
    MAX_VOXELS_PER_CASE and weighted to stand for all of it."""
    probs, labels = np.asarray(probs).ravel(), np.asarray(labels, dtype=bool).ravel()
    sure = (probs < SURE_PROBABILITY) & ~labels
    half = MAX_VOXELS_PER_CASE // 2
    unsure_idx, unsure_w = _draw(np.flatnonzero(~sure), half, rng)
    sure_all = np.flatnonzero(sure)
    sure_idx, sure_w = _draw(sure_all, min(half, -(-sure_all.size // BACKGROUND_STRIDE)), rng)
    keep = np.concatenate([unsure_idx, sure_idx])
    weights = np.concatenate([np.full(unsure_idx.size, unsure_w, np.float32), np.full(sure_idx.size, sure_w, np.float32)])
    return logits_of(probs[keep]).astype(np.float32), labels[keep], weights
