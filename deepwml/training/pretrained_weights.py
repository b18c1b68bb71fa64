"""Start training from another model's weights (``deepwml_train --pretrained builtin|PATH``): find, check, record.

The weights come from the shipped model, a trained or installed PLAN folder, a fold folder or one checkpoint file,
always read weights-only. The network section of that model's plan must equal this plan's (same layers, same
shapes); preprocessing differences are reported, because a network sees what preprocessing made of the scan.

One difference is bridged: a 2D model (or a 2.5D one with fewer neighbours) starts a 2.5D plan (more
``context_slices``). Its first convolution is widened ("inflated"): the slice's own channel keeps its weights and
the new neighbour channels start at zero, so the network starts out computing exactly what the 2D model did and
learns during fine-tuning what the neighbouring slices add.

And a narrower ``unet2d`` starts a wider one (more ``features`` per level, nothing else different): its channels are
copied (deepwml/models/widen.py), so the wider network also starts out computing what the narrow model did.

And an instance-norm model starts a batch-norm plan (``norm``: instance -> batch, e.g. to distil an instance-norm
network into one whose prediction is cheaper and may be cropped to the head): the convolutions and the norms' learned
scales and shifts carry over; batch norm's running statistics start at their defaults and are learnt in training (in
training mode it normalises by each batch's statistics, close to what the instance norms did per slice). And back:
a batch-norm model starts an instance-norm plan, its running statistics dropped (each slice is then normalised by
its own statistics, in training mode what the batch norm did for a batch of that one slice)."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection, Dict, List, Tuple

import torch

from deepwml.models.widen import widen_unet2d
from deepwml.planning.plan import NetworkPlan, Plan
from deepwml.pretrained import BUILTIN_ALIAS, builtin_model_dir
from deepwml.training.checkpoint import BEST, LATEST, load_checkpoint
from deepwml.utils.errors import DeepWMLError

#: fine-tuning starts at this fraction of the plan's learning rate unless --lr says otherwise
FINETUNE_LR_FACTOR = 0.1


@dataclass
class PretrainedWeights:
    """Weights to start from and where they came from (stored in every checkpoint of the run as ``pretrained``)."""

    state: Dict[str, torch.Tensor]
    origin: Dict[str, Any]


def _checkpoint_file(spec: str) -> Tuple[Path, List[str]]:
    """The checkpoint file that ``spec`` names (builtin, a PLAN folder, a fold folder or a .pth file), and a note
    when it is one member of the shipped ensemble."""
    path = builtin_model_dir() if spec == BUILTIN_ALIAS else Path(spec).expanduser()
    if path.is_file():
        return path, []
    if not path.is_dir():
        raise DeepWMLError("--pretrained: not found (give 'builtin', a model's PLAN folder, a fold folder or a checkpoint file)", path)
    folds = [path] if path.name.startswith("fold_") else sorted(p for p in path.glob("fold_*") if p.is_dir())
    notes = []
    if spec == BUILTIN_ALIAS and len(folds) > 1:
        # the shipped model may be an ensemble; one network is fine-tuned, so start from its first member
        notes.append(f"the shipped model is an ensemble; fine-tuning starts from its first member, {folds[0].name}")
        folds = folds[:1]
    files = [f / name for f in folds for name in (BEST, LATEST) if (f / name).is_file()]
    if not files:
        raise DeepWMLError(f"--pretrained: no fold_K/{BEST} or {LATEST} below this folder", path)
    if len({f.parent for f in files}) > 1:
        names = ", ".join(sorted({f.parent.name for f in files}))
        raise DeepWMLError(f"--pretrained: several folds here ({names}); name one, e.g. {folds[0]}", path)
    return files[0], notes


def start_checkpoint(spec: str) -> Path:
    """The checkpoint file ``deepwml_train --pretrained spec`` starts from."""
    return _checkpoint_file(spec)[0]


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes (what a run records of the weights it learnt from)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def differences(a: Dict[str, Any], b: Dict[str, Any]) -> List[str]:
    """Keys whose values differ, as 'key: a -> b'."""
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


#: network keys in which a model with fewer context slices may differ from the plan it starts (see inflate_context)
CONTEXT_KEYS = ("in_channels", "context_slices", "context_padding")


def _context(net: Dict[str, Any]) -> Tuple[int, int]:
    """(image channels, context slices) of a plan's network section (older plans have no context_slices: 1)."""
    k = int(net.get("context_slices", 1) or 1)
    return int(net.get("in_channels", 1)) // k, k


def inflate_context(state: Dict[str, torch.Tensor], theirs: Dict[str, Any], ours: Dict[str, Any],
                    path: Path) -> Tuple[Dict[str, torch.Tensor], str]:
    """``state`` with its first convolution widened from ``theirs``' context slices to ``ours``' (neighbours zero)."""
    (c0, k0), (c, k) = _context(theirs), _context(ours)
    if (c0, k0) == (c, k):
        return state, (f"context_padding differs from the pretrained model's: {theirs.get('context_padding')!r} -> "
                       f"{ours.get('context_padding')!r}")
    if c0 != c or k <= k0 or (k - k0) % 2:
        raise DeepWMLError(
            f"--pretrained: its input ({c0} image channel(s) x {k0} slice(s)) cannot start this plan's ({c} x {k}); "
            "a model can only start a plan with the same image channels and more context slices", path)
    first = [name for name, w in state.items() if w.ndim == 4 and w.shape[1] == c0 * k0]
    if len(first) != 1:
        raise DeepWMLError(f"--pretrained: cannot tell its first convolution ({len(first)} candidates) to widen it "
                           f"to {k} context slices", path)
    name = first[0]
    w = state[name]
    wide = w.new_zeros((w.shape[0], c, k, *w.shape[2:]))
    # channel ci*k + j is image channel ci at slice offset j - k//2 (network_input.stack_slices); centre-aligned
    off = (k - k0) // 2
    wide[:, :, off:off + k0] = w.reshape(w.shape[0], c, k0, *w.shape[2:])
    out = dict(state)
    out[name] = wide.reshape(w.shape[0], c * k, *w.shape[2:])
    return out, (f"widened its first convolution ({name}) from {k0} to {k} context slices; the neighbouring slices "
                 "start at zero weight, so training starts from what the model computed without them")


def _differs_beyond(theirs: Dict[str, Any], ours: Dict[str, Any], bridged: Tuple[str, ...]) -> bool:
    """Whether two network sections differ in any key outside ``bridged``."""
    return bool(differences({k: v for k, v in theirs.items() if k not in bridged},
                            {k: v for k, v in ours.items() if k not in bridged}))


#: norms with one learnt scale and shift per channel, which --pretrained moves into one another (see bridge_norm)
BRIDGED_NORMS = ("instance", "batch", "batch_deep_instance")
#: (pretrained model's norm, this plan's norm) that --pretrained bridges
NORM_BRIDGES = {(a, b) for a in BRIDGED_NORMS for b in BRIDGED_NORMS if a != b}
#: batch norm's buffers, which an instance-norm layer does not have
_BATCH_NORM_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def drop_batch_norm_statistics(state: Dict[str, torch.Tensor], keep: Collection[str] = ()) -> Dict[str, torch.Tensor]:
    """``state`` without batch norm's running statistics, except those named in ``keep`` (the ones a network with
    batch norm in those places has)."""
    return {k: v for k, v in state.items() if k in keep or not k.endswith(_BATCH_NORM_BUFFERS)}


def _fresh_state(network: NetworkPlan) -> Dict[str, torch.Tensor]:
    """The state of a newly built network of this plan (its keys, and batch norm's statistics at their defaults)."""
    from deepwml.models import build_network

    return build_network(network).state_dict()


def bridge_norm(state: Dict[str, torch.Tensor], pair: Tuple[str, str], network: NetworkPlan,
                path: Path) -> Tuple[Dict[str, torch.Tensor], str]:
    """``state`` of a network with one norm made fit for ``network``, the same with another: batch norm's running
    statistics dropped where ``network`` normalises each slice by its own, added at their defaults where it has batch
    norm and the pretrained network had none."""
    if pair not in NORM_BRIDGES:
        raise DeepWMLError(f"--pretrained: its network's norm is {pair[0]!r}, this plan's {pair[1]!r}; only "
                           f"{', '.join(BRIDGED_NORMS)} norms are bridged", path)
    fresh = _fresh_state(network)
    out = drop_batch_norm_statistics(state, keep=fresh)
    missing = [k for k in fresh if k not in out]
    if set(out) - set(fresh) or any(not k.endswith(_BATCH_NORM_BUFFERS) for k in missing):
        odd = sorted(set(out) - set(fresh)) + [k for k in missing if not k.endswith(_BATCH_NORM_BUFFERS)]
        raise DeepWMLError(f"--pretrained: its weights are not those of this plan's network with {pair[0]} norm "
                           f"({', '.join(odd[:3])})", path)
    out.update({k: fresh[k] for k in missing})
    note = (f"its {pair[0]} norms become {pair[1]} norms: the convolutions and the norms' scales and shifts carry "
            "over")
    # (load_pretrained may have dropped the statistics already, before widening: the pair says what changes)
    if pair[0] != "instance" and pair[1] != "batch":
        # measured on a batch-norm student of the shipped model: its weights under instance norms, untrained, gave
        # masks at median Dice 0.92 with its own on 12 synthetic scans (benchmarks/batchnorm_conversion.py): a close
        # start
        note += "; where this plan has instance norm, each slice is normalised by its own statistics instead of the stored ones"
    if pair[0] != "batch" and pair[1] != "instance":
        note += "; the running statistics of its new batch norms are learnt in training"
    return out, note


def _widens(theirs: Dict[str, Any], ours: Dict[str, Any]) -> bool:
    """Whether this plan's network is the pretrained one with other widths per level (and nothing else but context)."""
    if theirs.get("features") == ours.get("features") or not theirs.get("features") or not ours.get("features"):
        return False
    return not _differs_beyond(theirs, ours, ("features",) + CONTEXT_KEYS)


def widen(state: Dict[str, torch.Tensor], theirs: Dict[str, Any], ours: Dict[str, Any],
          path: Path) -> Tuple[Dict[str, torch.Tensor], str]:
    """``state`` grown to this plan's widths per level (deepwml/models/widen.py); narrower or other networks are errors."""
    old, new = list(theirs["features"]), list(ours["features"])
    if ours.get("architecture") != "unet2d":
        raise DeepWMLError(f"--pretrained: its network has features {old}, this plan's {new}; only a unet2d model can "
                           "start a plan with the same levels, each at least as wide (it is widened)", path)
    try:
        state = widen_unet2d(state, old, new)
    except ValueError as err:
        raise DeepWMLError(f"--pretrained: cannot widen it: {err}", path) from err
    return state, (f"widened from features {old} to {new}: each new channel copies an old one, so training starts "
                   "from what the model computed (up to the small noise that lets the copies diverge)")


def load_pretrained(spec: str, plan: Plan) -> Tuple[PretrainedWeights, List[str]]:
    """Weights for ``plan``'s network from ``spec``, and notes on preprocessing that differs; mismatches are errors."""
    path, notes = _checkpoint_file(spec)
    ckpt = load_checkpoint(path)
    if "model" not in ckpt or not isinstance(ckpt.get("plan"), dict):
        raise DeepWMLError("--pretrained: not a DeepWML checkpoint (needs 'model' and 'plan')", path)
    theirs = ckpt["plan"]
    their_net, our_net = theirs.get("network", {}), plan.to_dict()["network"]
    state, inflated, widened = ckpt["model"], None, None
    normed = None
    if their_net.get("norm") != our_net.get("norm"):
        # checked and completed once the other bridges have shaped the state to this plan's widths
        normed = (their_net.get("norm"), our_net.get("norm"))
        their_net = {**their_net, "norm": our_net.get("norm")}
        if normed in NORM_BRIDGES:
            # before widening, which would otherwise widen statistics this plan's network has no place for (the keys
            # do not depend on the widths)
            state = drop_batch_norm_statistics(state, keep=_fresh_state(plan.network))
    if _widens(their_net, our_net):
        state, note = widen(state, their_net, our_net, path)
        notes.append(note)
        widened = [list(their_net["features"]), list(our_net["features"])]
        their_net = {**their_net, "features": our_net["features"]}
    network_diff = differences(their_net, our_net)
    if network_diff and not _differs_beyond(their_net, our_net, CONTEXT_KEYS):
        state, note = inflate_context(state, their_net, our_net, path)
        notes.append(note)
        network_diff = []
        if _context(their_net) != _context(our_net):
            inflated = [_context(their_net)[1], _context(our_net)[1]]
    if network_diff:
        raise DeepWMLError(
            "--pretrained: its network differs from this plan's (" + "; ".join(network_diff) + "); plan with the same "
            "network section (e.g. the same preset) to fine-tune from it",
            path,
        )
    if normed:
        state, note = bridge_norm(state, normed, plan.network, path)
        notes.append(note)
    notes += [f"preprocessing differs from the pretrained model's: {d}"
              for d in differences(theirs.get("preprocessing", {}), plan.to_dict()["preprocessing"])]
    origin = {
        "source": spec,
        "file": str(path.resolve()),
        "sha256": file_sha256(path),
        "plan_name": theirs.get("name"),
        "plan_hash": ckpt.get("plan_hash"),
        "epoch": ckpt.get("epoch"),
    }
    if inflated:
        origin["context_slices_inflated"] = inflated
    if widened:
        origin["features_widened"] = widened
    if normed:
        origin["norm_bridged"] = list(normed)
    return PretrainedWeights(state, origin), notes
