"""A trained ``unet2d`` grown to more channels per level without changing what it computes (Net2WiderNet).

Each new channel of a level copies one old channel (channel ``j`` copies ``j mod old``): the convolutions and
normalisation layers that make a level copy their output rows, and every layer that reads a level splits each old
input weight among its copies, so the wider network computes the narrow one's logits (to rounding). Copies that
stayed identical would receive identical updates and the extra width would be wasted, so the split is uneven
(random shares summing to one: still exact) and the incoming weights of every copy but the first get a little
noise (``noise`` × the layer's weight SD), which moves the logits slightly; both come from ``seed``.
The module names are those of ``deepwml/models/unet2d.py`` (``encoder``, ``up``, ``decoder``, ``head``,
``ds_heads``); other architectures cannot be widened.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch

#: default SD of the noise on the copies' incoming weights, as a fraction of each layer's weight SD
WIDEN_NOISE = 0.01


def _copies(old: int, new: int) -> torch.Tensor:
    """For each new channel, the old channel it copies."""
    return torch.arange(new) % old


class _Widener:
    """Builds the widened state dict layer by layer."""

    def __init__(self, state: Dict[str, torch.Tensor], seed: int, noise: float) -> None:
        self.state, self.noise, self.new = state, noise, {}
        self.gen = torch.Generator().manual_seed(seed)

    def _shares(self, in_map: torch.Tensor) -> torch.Tensor:
        """Per new input channel its share of the old weight: positive, summing to one over the copies."""
        raw = 1.0 + 0.2 * (torch.rand(len(in_map), generator=self.gen, dtype=torch.float64) - 0.5)
        total = torch.zeros(int(in_map.max()) + 1, dtype=torch.float64).index_add_(0, in_map, raw)
        return (raw / total[in_map]).float()

    def _noisy(self, w: torch.Tensor, out_map: torch.Tensor, out_dim: int, sd: float) -> torch.Tensor:
        """``w`` with noise on the output channels that are not the first copy of theirs."""
        if not self.noise:
            return w
        later = out_map != torch.arange(len(out_map))  # channel j is a first copy exactly when j < old (j mod old == j)
        shape = [1] * w.ndim
        shape[out_dim] = len(out_map)
        mask = later.reshape(shape).to(w.dtype)
        return w + mask * self.noise * sd * torch.randn(w.shape, generator=self.gen, dtype=w.dtype)

    def conv(self, name: str, in_map: Optional[torch.Tensor], out_map: Optional[torch.Tensor],
             transposed: bool = False) -> None:
        """A (transposed) convolution reading channels ``in_map`` and writing ``out_map`` (None: not widened)."""
        w = self.state[f"{name}.weight"].float()
        sd = float(w.std()) if w.numel() > 1 else 0.0
        in_dim, out_dim = (0, 1) if transposed else (1, 0)
        if out_map is not None:
            w = w.index_select(out_dim, out_map)
        if in_map is not None:
            w = w.index_select(in_dim, in_map)
            shape = [1] * w.ndim
            shape[in_dim] = len(in_map)
            w = w * self._shares(in_map).reshape(shape)
        if out_map is not None:
            w = self._noisy(w, out_map, out_dim, sd)
        self.new[f"{name}.weight"] = w.to(self.state[f"{name}.weight"].dtype).contiguous()
        bias = self.state.get(f"{name}.bias")
        if bias is not None:
            self.new[f"{name}.bias"] = (bias if out_map is None else bias.index_select(0, out_map)).clone()

    def per_channel(self, name: str, out_map: torch.Tensor) -> None:
        """A normalisation layer's per-channel parameters and buffers."""
        for key in ("weight", "bias", "running_mean", "running_var"):
            v = self.state.get(f"{name}.{key}")
            if v is not None:
                self.new[f"{name}.{key}"] = v.index_select(0, out_map).clone()
        if f"{name}.num_batches_tracked" in self.state:
            self.new[f"{name}.num_batches_tracked"] = self.state[f"{name}.num_batches_tracked"].clone()

    def block(self, prefix: str, in_map: Optional[torch.Tensor], out_map: torch.Tensor) -> None:
        """A ConvBlock: convolutions (4-D weights), each followed by its normalisation's per-channel tensors if any."""
        layers = sorted({int(k[len(prefix) + 1:].split(".")[0]) for k in self.state if k.startswith(prefix + ".")})
        reads = in_map
        for index in layers:
            name = f"{prefix}.{index}"
            weight = self.state.get(f"{name}.weight")
            if weight is not None and weight.ndim == 4:
                self.conv(name, reads, out_map)
                reads = out_map
            else:
                self.per_channel(name, out_map)


def widen_unet2d(state: Dict[str, torch.Tensor], old_features: Sequence[int], new_features: Sequence[int],
                 seed: int = 0, noise: float = WIDEN_NOISE) -> Dict[str, torch.Tensor]:
    """The state dict of ``unet2d`` with ``new_features`` computing what ``state`` (with ``old_features``) does."""
    if len(old_features) != len(new_features) or any(n < o for o, n in zip(old_features, new_features)):
        raise ValueError(f"features {list(old_features)} -> {list(new_features)}: a unet2d is widened to the same levels, "
                         "each at least as wide, not to a narrower or deeper one")
    maps: List[torch.Tensor] = [_copies(o, n) for o, n in zip(old_features, new_features)]
    w = _Widener(state, seed, noise)
    levels = len(maps)
    for level in range(levels):
        w.block(f"encoder.{level}", None if level == 0 else maps[level - 1], maps[level])
    for k, level in enumerate(reversed(range(levels - 1))):
        w.conv(f"up.{k}", maps[level + 1], maps[level], transposed=True)
        # the decoder block reads [skip, upsampled], each with this level's channels
        joined = torch.cat([maps[level], maps[level] + old_features[level]])
        w.block(f"decoder.{k}", joined, maps[level])
    w.conv("head", maps[0], None)
    for k in range(levels - 2):
        if f"ds_heads.{k}.weight" in state:
            w.conv(f"ds_heads.{k}", maps[k + 1], None)
    left = sorted(set(state) - set(w.new))
    if left:
        raise ValueError(f"not a unet2d state dict: {', '.join(left[:4])} not widened")
    return w.new
