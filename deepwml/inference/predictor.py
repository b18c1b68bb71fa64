"""Lesion probabilities for a preprocessed [C, S, H, W] stack: batched slices, fold ensemble, optional flip TTA.

Each slice is fed as the network's input spec says (deepwml.models.InputSpec): its C channels and, in 2.5D, its
neighbouring slices (deepwml.preprocessing.network_input.stack_slices, as in training).

Only the head is sent through the network: slices without head are skipped outright and, when the network says
cropping is safe (not so with instance norm, whose statistics would change with the crop), each batch is cropped
to the bounding box of the head on its slices plus a margin that keeps the convolutions' background context.
Training validation predicts its slices with the same ``SlicePredictor.forward``.

With ``int8`` 'auto' or 'on' the first stack predicted decides, per fold network, whether the rest of the run
computes in int8 (deepwml.inference.int8).
"""
from __future__ import annotations

import sys
import threading
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from deepwml.inference import int8 as int8_path
from deepwml.inference.batches import inference_batches, predict_stack, probabilities_to_mask, slices_to_mirror
from deepwml.models.base import network_spec
from deepwml.planning.plan import Plan
from deepwml.preprocessing.network_input import as_channels, require_channels, stack_slices
from deepwml.training.device import DeviceSetup


def _pad_to_multiple(x: torch.Tensor, multiple: int) -> Tuple[torch.Tensor, Tuple[int, int]]:
    """Pad H and W at the far end to a multiple of the U-Net's downsampling factor (target-spacing plans vary), with
    each plane's lowest value, as training pads a patch that leaves its slice (training.dataloader): repeating the
    edge instead carried a head cut by the field of view on into the padding, and the anatomy model called brain up
    to that edge of the field, not to the other (benchmarks/README.md, "The brain cut by the field of view")."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        padded = x.amin(dim=(-2, -1), keepdim=True).expand(*x.shape[:-2], h + ph, w + pw).clone()
        padded[..., :h, :w] = x
        x = padded
    return x, (h, w)


class SlicePredictor:
    """Runs one or several fold networks over slices and averages their sigmoid probabilities.

    ``prepare`` moves the networks to the device and layout and switches them to eval mode; training validation
    passes networks it has prepared itself (and switches their mode around the call). ``int8`` ('auto', 'on' or
    'off') lets ``predict`` swap fold networks for int8 copies where they agree and, in 'auto', pay
    (deepwml.inference.int8); ``run_cases`` is how many stacks the run will predict, when known, so that 'auto'
    does not calibrate for a run too short to repay it. ``mirror_floor``: flip TTA mirrors only the slices whose first
    pass reaches it (deepwml.inference.batches.mirror_floor; None: every slice).
    """

    def __init__(
        self,
        networks: Sequence[nn.Module],
        plan: Plan,
        setup: DeviceSetup,
        tta: bool = False,
        batch_size: Optional[int] = None,
        crop: bool = True,
        prepare: bool = True,
        int8: str = "off",
        run_cases: Optional[int] = None,
        mirror_floor: Optional[float] = None,
    ) -> None:
        self.plan = plan
        self.setup = setup
        self.device = setup.device
        self.tta = tta
        #: flip TTA mirrors only the slices whose first pass reaches this (deepwml.inference.batches.mirror_floor)
        self.mirror_floor = mirror_floor
        self.batch_size = int(batch_size or plan.inference.batch_size)
        self.crop = crop
        # channels_last lets oneDNN pick its fastest CPU convolution kernels (the device setup knows where it pays)
        layout = torch.channels_last if setup.channels_last else torch.contiguous_format
        self.layout = layout
        self.networks: List[nn.Module] = [n.to(self.device).eval().to(memory_format=layout) for n in networks] if prepare else list(networks)
        #: the folds share one plan, so one network answers for all
        self.network = self.networks[0]
        self.multiple = self.network.size_multiple
        # a registered network answers itself; a bare module (a test's toy) takes the plan's word
        self.input_spec = getattr(self.network, "input_spec", None) or network_spec(plan.network).input_spec
        #: 1: a lesion probability (sigmoid); more: one probability per class (softmax)
        self.out_channels = plan.network.out_channels
        self.int8 = int8_path.check_mode(int8)
        self.run_cases = run_cases
        #: one per fold network once the first stack has been predicted with int8 'auto' or 'on'
        self.int8_decisions: List[int8_path.Int8Decision] = []
        self._int8_undecided = self.int8 != "off"
        # case workers (deepwml.inference.case_workers) share the predictor: one decides, the others wait for it
        self._int8_lock = threading.Lock()

    def _network_input(self, batch: np.ndarray) -> Tuple[torch.Tensor, Tuple[int, int]]:
        """Network input [B, C·k, H, W] ([B, H, W]: one channel) on the device, padded to the U-Net's multiple and in
        the predictor's layout, and the height and width before padding."""
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        x = (x[:, None] if x.ndim == 3 else x).to(self.device)
        if x.shape[1] != self.input_spec.in_channels:
            raise ValueError(f"the network takes {self.input_spec.in_channels} input channel(s), the batch has {x.shape[1]}")
        x, size = _pad_to_multiple(x, self.multiple)
        return x.contiguous(memory_format=self.layout), size

    def _probabilities(self, net: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """One network's sigmoid (binary) or softmax (multi-class) probabilities [B, out_channels, H, W] of ``x``."""
        with self.setup.autocast():
            logits = net(x)
        return torch.sigmoid(logits.float()) if self.out_channels == 1 else torch.softmax(logits.float(), dim=1)

    @torch.inference_mode()
    def forward(self, batch: np.ndarray) -> np.ndarray:
        """Mean probability over folds (and, with flip TTA, over the flips of the slices whose first pass reaches the
        mirror floor) for network input [B, C·k, H, W] ([B, H, W]: one channel): [B, H, W] for a binary plan,
        [B, classes, H, W] class probabilities for a multi-class one."""
        x, (h, w) = self._network_input(batch)
        total = torch.zeros(x.shape[0], self.out_channels, h, w, device=self.device, dtype=torch.float32)
        for net in self.networks:
            total += self._probabilities(net, x)[..., :h, :w]
        passes = torch.full((x.shape[0],), float(len(self.networks)), device=self.device)
        if self.tta:
            floor = self.mirror_floor if self.out_channels == 1 else None
            first_max = (total.flatten(1).amax(dim=1) / len(self.networks)).cpu().numpy()
            mirror = torch.from_numpy(slices_to_mirror(first_max, floor)).to(self.device)
            if mirror.numel():
                mirrored = torch.flip(x[mirror], dims=(-1,)).contiguous(memory_format=self.layout)
                for net in self.networks:
                    # mirrored back before the padding (at the far end) is cut off, else a padded batch's two answers
                    # would be averaged a padding's width apart
                    total[mirror] += torch.flip(self._probabilities(net, mirrored), dims=(-1,))[..., :h, :w]
                passes[mirror] *= 2
        total /= passes[:, None, None, None]
        return total[:, 0].cpu().numpy() if self.out_channels == 1 else total.cpu().numpy()

    def predict(self, image_pp: np.ndarray, head: Optional[np.ndarray] = None) -> np.ndarray:
        """Probabilities [S, H, W] float32 for a preprocessed stack [C, S, H, W] ([S, H, W]: one channel), zero outside
        the head region; for a multi-class plan class probabilities [S, classes, H, W], background outside it."""
        image_pp = as_channels(np.asarray(image_pp))
        require_channels(image_pp, self.input_spec.channels, "the preprocessed image")
        if self._int8_undecided:
            with self._int8_lock:
                if self._int8_undecided:
                    try:
                        self._choose_int8(image_pp, head if self.crop else None)
                    finally:
                        # cleared only now: a worker that finds it clear never sees the networks being swapped
                        self._int8_undecided = False
        return predict_stack(image_pp, head if self.crop else None, self.forward, self.network, self.input_spec, self.batch_size,
                             self.out_channels, self.plan.inference.crop_margin)

    def _choose_int8(self, image_pp: np.ndarray, head: Optional[np.ndarray]) -> None:
        """Decide, once per fold network, between fp32 and int8 on a calibration batch of this stack's slices."""
        reason = int8_path.unsupported_reason(self.networks, self.setup)
        s, h, w = image_pp.shape[1:]
        slices = np.arange(s) if head is None or not head.any() else np.flatnonzero(head.any(axis=(1, 2)))
        # the first stack stands for the others: a run of one 25-slice case does not repay calibrating
        run_slices = len(slices) * self.run_cases if self.run_cases is not None else None
        if reason is None and self.int8 == "auto" and run_slices is not None and run_slices < int8_path.MIN_RUN_SLICES:
            reason = f"the run predicts about {run_slices} slices, too few to repay calibrating (auto needs {int8_path.MIN_RUN_SLICES})"
        if reason is not None:
            if self.int8 == "on":
                _note(f"int8: not used: {reason}")
            return
        # spread over the head, not the first slices: the activation ranges are those of the whole stack
        n = min(max(self.batch_size, int8_path.CALIBRATION_SLICES), len(slices))
        pick = np.unique(slices[np.linspace(0, len(slices) - 1, n).round().astype(int)])
        region = inference_batches(None if head is None else head[pick], (len(pick), h, w), self.network, len(pick),
                                   self.plan.inference.crop_margin)[0]
        spec = self.input_spec
        x, (bh, bw) = self._network_input(stack_slices(image_pp, pick[region.slices], spec.context_slices, spec.padding,
                                                       region.rows, region.cols))
        for k, net in enumerate(self.networks):
            chosen, decision = int8_path.choose(net, k, x, self._probabilities, lambda p: self._mask(p[..., :bh, :bw]), self.int8)
            self.networks[k] = chosen
            self.int8_decisions.append(decision)
            _note(f"int8: {decision.describe()}")

    def _mask(self, probs: torch.Tensor) -> np.ndarray:
        """The run's mask of probabilities [B, out_channels, H, W]: the plan's threshold, or the argmax label."""
        if self.out_channels == 1:
            return probabilities_to_mask(probs[:, 0].cpu().numpy(), self.plan.inference.threshold)
        return probs.argmax(dim=1).cpu().numpy()


def _note(message: str) -> None:
    """One line on stderr, as deepwml_predict's other notes."""
    print(f"[deepwml_predict] {message}", file=sys.stderr)
