"""The plan: one versioned, human-readable JSON that preprocessing, training and prediction all obey.

A shipped preset (``plans/NAME.json``) holds the same sections with no dataset-specific values; the
experiment planner fills those in from the fingerprint and writes ``plans.json``. Unknown keys and
impossible settings are errors that name the file and the key.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Union, get_type_hints

from deepwml.utils.atomic import read_json, write_json
from deepwml.utils.errors import PlanError

PLAN_VERSION = 1
NORMALIZATION_SCHEMES = ("zscore_head", "zscore", "none")
#: version of the preprocessing code: bump it whenever the same plan would give a different cache, so that
#: preprocessing_hash changes and every cached case is computed again (2: robust to intensity outliers)
PREPROCESSING_ALGORITHM_VERSION = 2


@dataclass
class PreprocessingPlan:
    """How a raw case becomes a stack of normalised axial 2D slices (and how to undo it)."""

    #: 'fixed_matrix': every slice resampled to ``matrix`` (the paper: 256×256);
    #: 'target_spacing': resampled in-plane to ``target_spacing`` mm, matrix varies with the field of view.
    inplane_mode: str = "fixed_matrix"
    matrix: List[int] = field(default_factory=lambda: [256, 256])
    target_spacing: Optional[List[float]] = None
    #: spline order for the image; labels are resampled linearly as a binary mask and thresholded.
    image_order: int = 3
    label_threshold: float = 0.5
    #: 'zscore_head': z-score with mean/std inside the head mask after clipping at the percentiles below.
    normalization: str = "zscore_head"
    clip_percentiles: List[float] = field(default_factory=lambda: [0.5, 99.5])
    #: float16 halves the cache; float32 keeps it exact.
    cache_dtype: str = "float16"
    #: 'coarsest': the slice axis is the axis with the coarsest spacing, a 3D scan's the one nearest the head's long axis
    #: (Geometry.slice_axis; never resampled)
    slice_axis: str = "coarsest"
    #: 'canonical': slice axis first, columns patient right→left, rows anterior→posterior (permutation/flips only)
    orientation: str = "canonical"
    #: Gaussian smoothing before in-plane downsampling of the image (not the label)
    anti_alias: bool = True
    #: one entry per image channel of dataset.json ``channel_names``, in order: {"name": "T1", "normalization":
    #: "zscore_head"}; channel 0's scheme is ``normalization``. Empty (left out of plans.json and of both hashes):
    #: one FLAIR channel, as every plan before channels existed
    channels: List[Dict[str, Any]] = field(default_factory=list)


@dataclass
class NetworkPlan:
    """The network: a family registered in ``deepwml.models.NETWORKS`` (the paper's 'unet2d', 'resenc_unet2d')."""

    architecture: str = "unet2d"
    features: List[int] = field(default_factory=lambda: [64, 128, 256, 512, 1024])
    convs_per_block: int = 2
    #: a layer registered in ``deepwml.models.NORMS``: 'none' (the paper), 'batch', 'instance' or
    #: 'batch_deep_instance' (batch norm, instance norm at the two coarsest levels)
    norm: str = "none"
    deep_supervision: bool = False
    #: channels of the network's input: image channels × context_slices (the planner sets it)
    in_channels: int = 1
    #: 2.5D: each slice is fed with its (k - 1) / 2 neighbours on either side as extra channels (odd; 1 = plain 2D)
    context_slices: int = 1
    #: what stands in for the neighbours beyond the ends of the stack: 'edge' (the end slice repeated) or 'zero'
    context_padding: str = "edge"
    #: settings only one family reads (resenc_unet2d: blocks_per_stage); left out of plans.json when empty, so
    #: plans written before it existed keep their hash
    options: Dict[str, Any] = field(default_factory=dict)
    #: classes including background, from dataset.json "labels" (the planner fills it in): 2 is the lesion model's
    #: one sigmoid output; more is one softmax output per class. Left out of plans.json when 2, so binary plans
    #: written before it existed keep their hash
    num_classes: int = 2

    @property
    def out_channels(self) -> int:
        """Logit channels of the network's head: one for a binary plan, one per class otherwise."""
        return 1 if self.num_classes == 2 else self.num_classes


@dataclass
class AugmentationPlan:
    """Training augmentation; the paper's set is a horizontal flip and rotation ±10°."""

    mirror_lr: bool = True
    rotation_deg: float = 10.0
    #: None disables an entry; ranges are [low, high]
    scale: Optional[List[float]] = None
    elastic_alpha: Optional[List[float]] = None
    elastic_sigma: Optional[List[float]] = None
    gamma: Optional[List[float]] = None
    noise_variance: Optional[List[float]] = None
    blur_sigma: Optional[List[float]] = None
    brightness: Optional[List[float]] = None
    contrast: Optional[List[float]] = None
    low_resolution: Optional[List[float]] = None
    #: probability that an enabled transform is applied to a sample
    p_per_sample: float = 0.2
    #: an entry's own probability instead of p_per_sample, by entry name (e.g. {"brightness": 1.0}); nnU-Net draws
    #: each transform with its own probability. Left out of plans.json when empty, so older plans keep their hash
    probabilities: Dict[str, float] = field(default_factory=dict)


@dataclass
class TrainingPlan:
    """Optimisation and sampling."""

    patch_size: List[int] = field(default_factory=lambda: [256, 256])
    batch_size: int = 8
    memory_budget_gb: float = 8.0
    loss: str = "bce_dice"
    optimizer: str = "adam"
    learning_rate: float = 1e-4
    weight_decay: float = 0.0
    #: 'constant' (the paper), 'poly' or 'cosine'
    lr_schedule: str = "constant"
    epochs: int = 200
    iterations_per_epoch: int = 250
    #: fraction of each batch forced to hold lesion pixels
    foreground_oversampling: float = 0.33
    #: augmentation worker processes; None = from the CPU count
    num_workers: Optional[int] = None
    ema_alpha: float = 0.9
    augmentation: AugmentationPlan = field(default_factory=AugmentationPlan)


@dataclass
class InferencePlan:
    """Prediction settings."""

    threshold: float = 0.5
    batch_size: int = 8
    tta: bool = False
    #: background kept around the head box, in pixels of the network's grid, when the network may be cropped to the
    #: head (batch norm or none; deepwml.inference.batches): the deepest convolutions reach far beyond a pixel, so a
    #: narrower margin is faster and moves the probabilities near the head's edge a little more
    #: (benchmarks/crop_margin.py measures both). Left out of plans.json when 32, so older plans keep their hash
    crop_margin: int = 32


@dataclass
class Plan:
    """Everything preprocessing, training and prediction share."""

    name: str = "paper"
    plan_version: int = PLAN_VERSION
    description: str = ""
    dataset: Optional[str] = None
    fingerprint_hash: Optional[str] = None
    preprocessing: PreprocessingPlan = field(default_factory=PreprocessingPlan)
    network: NetworkPlan = field(default_factory=NetworkPlan)
    training: TrainingPlan = field(default_factory=TrainingPlan)
    inference: InferencePlan = field(default_factory=InferencePlan)
    #: what the planner saw in the fingerprint (informational; editing it changes nothing)
    data_summary: Dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready form; keys added after 0.x are left out while they hold their default, so older plans keep their hash."""
        d = dataclasses.asdict(self)
        for section, key, default in OMITTED_DEFAULTS:
            part = d
            for name in section.split("."):
                part = part[name]
            if part[key] == default:
                del part[key]
        return d

    @property
    def n_channels(self) -> int:
        """Image channels per slice (the cache's C)."""
        return len(self.preprocessing.channels) or 1

    def channel_schemes(self) -> List[str]:
        """The normalisation scheme of each image channel, in order."""
        pp = self.preprocessing
        return [str(c.get("normalization")) for c in pp.channels] or [pp.normalization]

    def save(self, path: Union[str, Path]) -> None:
        """Write atomically as indented JSON."""
        write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, d: Dict[str, Any], source: Optional[Union[str, Path]] = None) -> "Plan":
        """Parse, rejecting unknown keys and wrong types, then validate."""
        plan = _build(cls, d, "", source)
        problems = plan.problems()
        if problems:
            raise PlanError("invalid plan: " + "; ".join(problems), source)
        return plan

    @classmethod
    def load(cls, path: Union[str, Path]) -> "Plan":
        """Read and validate a plan file."""
        return cls.from_dict(read_json(path), path)

    def problems(self) -> List[str]:
        """Every setting that cannot work (empty: valid)."""
        from deepwml.models.registry import LOSSES, LR_SCHEDULES, OPTIMIZERS

        p: List[str] = []
        pp, net, tr = self.preprocessing, self.network, self.training
        if self.plan_version != PLAN_VERSION:
            p.append(f"plan_version {self.plan_version} is not supported (this DeepWML reads {PLAN_VERSION})")
        if pp.inplane_mode not in ("fixed_matrix", "target_spacing"):
            p.append(f"preprocessing.inplane_mode must be 'fixed_matrix' or 'target_spacing', got {pp.inplane_mode!r}")
        if pp.inplane_mode == "fixed_matrix" and (len(pp.matrix) != 2 or min(pp.matrix) < 8):
            p.append(f"preprocessing.matrix must be two sizes >= 8, got {pp.matrix}")
        if pp.inplane_mode == "target_spacing" and (
            pp.target_spacing is None or len(pp.target_spacing) != 2 or min(pp.target_spacing) <= 0
        ):
            p.append("preprocessing.target_spacing must be two positive spacings in mm for inplane_mode 'target_spacing'")
        if pp.image_order not in range(0, 6):
            p.append(f"preprocessing.image_order must be 0..5, got {pp.image_order}")
        if not 0 < pp.label_threshold < 1:
            p.append("preprocessing.label_threshold must lie in (0, 1)")
        if pp.normalization not in NORMALIZATION_SCHEMES:
            p.append(f"preprocessing.normalization {pp.normalization!r} is not one of {', '.join(NORMALIZATION_SCHEMES)}")
        p.extend(_channel_problems(pp))
        lo_hi = pp.clip_percentiles
        if len(lo_hi) != 2 or not 0 <= lo_hi[0] < lo_hi[1] <= 100:
            p.append(f"preprocessing.clip_percentiles must be [low, high] within 0..100, got {lo_hi}")
        if pp.cache_dtype not in ("float16", "float32"):
            p.append("preprocessing.cache_dtype must be float16 or float32")
        if pp.slice_axis != "coarsest":
            p.append(f"preprocessing.slice_axis must be 'coarsest', got {pp.slice_axis!r}")
        if pp.orientation != "canonical":
            p.append(f"preprocessing.orientation must be 'canonical', got {pp.orientation!r}")
        if len(tr.patch_size) != 2:
            p.append(f"training.patch_size must be two sizes, got {tr.patch_size}")
        p.extend(_network_problems(net, tr.patch_size))
        if net.in_channels != self.n_channels * net.context_slices:
            p.append(f"network.in_channels must be {self.n_channels * net.context_slices} ({self.n_channels} image channel(s) × "
                     f"network.context_slices {net.context_slices}), got {net.in_channels}")
        if tr.batch_size < 1:
            p.append("training.batch_size must be >= 1")
        p.extend(m for m in (LOSSES.problem(tr.loss), OPTIMIZERS.problem(tr.optimizer), LR_SCHEDULES.problem(tr.lr_schedule)) if m)
        if tr.learning_rate <= 0 or tr.epochs < 1 or tr.iterations_per_epoch < 1:
            p.append("training.learning_rate, epochs and iterations_per_epoch must be positive")
        if not 0 <= tr.foreground_oversampling <= 1:
            p.append("training.foreground_oversampling must lie in [0, 1]")
        p.extend(_class_problems(net.num_classes, tr.loss))
        p.extend(_augmentation_problems(tr.augmentation))
        if not 0 < self.inference.threshold < 1:
            p.append("inference.threshold must lie in (0, 1)")
        if self.inference.crop_margin < 0:
            p.append(f"inference.crop_margin must be >= 0 pixels, got {self.inference.crop_margin}")
        return p

    def hash(self) -> str:
        """SHA-256 of the whole plan's canonical JSON (checkpoints record it)."""
        return _sha256(self.to_dict())

    def preprocessing_hash(self) -> str:
        """SHA-256 of what the cache depends on: the preprocessing section, the fingerprint and the code's version."""
        return _sha256({
            "preprocessing": self.to_dict()["preprocessing"],
            "fingerprint": self.fingerprint_hash,
            "algorithm": PREPROCESSING_ALGORITHM_VERSION,
        })


def _channel_problems(pp: PreprocessingPlan) -> List[str]:
    """Each entry of preprocessing.channels: a unique name and a known scheme; channel 0 keeps ``normalization``."""
    p: List[str] = []
    names = []
    for i, channel in enumerate(pp.channels):
        key = f"preprocessing.channels[{i}]"
        unknown = sorted(set(channel) - {"name", "normalization"})
        if unknown:
            p.append(f"{key} has unknown key(s) {', '.join(unknown)} (known: name, normalization)")
        name, scheme = channel.get("name"), channel.get("normalization")
        if not isinstance(name, str) or not name.strip():
            p.append(f"{key}.name must be a non-empty string, got {name!r}")
        names.append(name)
        if scheme not in NORMALIZATION_SCHEMES:
            p.append(f"{key}.normalization {scheme!r} is not one of {', '.join(NORMALIZATION_SCHEMES)}")
    if pp.channels and pp.channels[0].get("normalization") != pp.normalization:
        p.append(f"preprocessing.channels[0].normalization must equal preprocessing.normalization ({pp.normalization!r})")
    if len(set(map(str, names))) != len(names):
        p.append(f"preprocessing.channels names must differ, got {names}")
    return p


def _network_problems(net: NetworkPlan, patch_size: List[int]) -> List[str]:
    """The network family's own checks, and whether the patch fits its size multiple."""
    from deepwml.models.registry import NETWORKS

    message = NETWORKS.problem(net.architecture)
    if message:
        return [message]
    spec = NETWORKS.get(net.architecture)(net)
    p = spec.problems()
    if p or len(patch_size) != 2:
        return p
    multiple = spec.size_multiple
    if any(s % multiple or s < multiple for s in patch_size):
        return [f"training.patch_size {patch_size} is impossible for {spec.poolings} poolings: "
                f"each size must be a multiple of {multiple}"]
    return []


#: (section, key, default) written to plans.json only when changed: plans and checkpoints written before the key
#: existed keep their hash (checkpoints record it; prediction compares it with plans.json)
OMITTED_DEFAULTS = (
    ("preprocessing", "channels", []),
    ("network", "options", {}),
    ("network", "context_slices", 1),
    ("network", "context_padding", "edge"),
    ("network", "num_classes", 2),
    ("inference", "crop_margin", 32),
    ("training.augmentation", "probabilities", {}),
)
#: the built-in losses of one sigmoid output, and of a softmax over classes (a plugin's loss is not checked)
BINARY_LOSSES = ("bce_dice", "bce", "dice", "bce_dice_blob")
MULTICLASS_LOSSES = ("ce_dice", "ce")


#: each range of training.augmentation: (smallest allowed value, whether that value itself is allowed, largest)
AUGMENTATION_RANGES = {
    "scale": (0.0, False, None),
    "elastic_alpha": (0.0, True, None),
    "elastic_sigma": (0.0, False, None),
    "gamma": (0.0, False, None),
    "noise_variance": (0.0, True, None),
    "blur_sigma": (0.0, True, None),
    "brightness": (0.0, False, None),
    "contrast": (0.0, False, None),
    "low_resolution": (0.0, False, 1.0),
}


#: the entries training.augmentation.probabilities may name: each transform's entry (the flip is always 0.5; elastic_sigma
#: goes with elastic_alpha)
AUGMENTATION_ENTRIES = ("rotation_deg",) + tuple(n for n in AUGMENTATION_RANGES if n != "elastic_sigma")


def _augmentation_problems(aug: AugmentationPlan) -> List[str]:
    """Augmentation values that would fail in a worker mid-training, or train silently on nonsense (a negative gamma)."""
    p: List[str] = []
    key = "training.augmentation"
    if not 0 <= aug.rotation_deg <= 180:
        p.append(f"{key}.rotation_deg must lie in [0, 180] (degrees either way), got {aug.rotation_deg}")
    if not 0 <= aug.p_per_sample <= 1:
        p.append(f"{key}.p_per_sample must lie in [0, 1], got {aug.p_per_sample}")
    for name, value in aug.probabilities.items():
        if name not in AUGMENTATION_ENTRIES:
            p.append(f"{key}.probabilities: {name!r} is not an augmentation entry (one of {', '.join(AUGMENTATION_ENTRIES)})")
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            p.append(f"{key}.probabilities.{name} must be a probability in [0, 1], got {value!r}")
        elif name in AUGMENTATION_RANGES and getattr(aug, name) is None:
            p.append(f"{key}.probabilities.{name} is given but {key}.{name} is off (null)")
    for name, (low, low_allowed, high) in AUGMENTATION_RANGES.items():
        value = getattr(aug, name)
        if value is None:
            continue
        bounds = f"{'>=' if low_allowed else '>'} {low:g}" + (f" and <= {high:g}" if high is not None else "")
        if len(value) != 2 or value[0] > value[1]:
            p.append(f"{key}.{name} must be [low, high] with low <= high, got {value}")
        elif (value[0] < low if low_allowed else value[0] <= low) or (high is not None and value[1] > high):
            p.append(f"{key}.{name} must hold values {bounds}, got {value}")
    return p


def _class_problems(num_classes: int, loss: str) -> List[str]:
    """The number of classes, and whether a built-in loss fits it."""
    if isinstance(num_classes, bool) or not 2 <= num_classes <= 255:
        return [f"network.num_classes must be 2..255 (classes including background), got {num_classes}"]
    if num_classes > 2 and loss in BINARY_LOSSES:
        return [f"training.loss {loss!r} is for one lesion class; a {num_classes}-class plan needs one of {', '.join(MULTICLASS_LOSSES)}"]
    if num_classes == 2 and loss in MULTICLASS_LOSSES:
        return [f"training.loss {loss!r} is for multi-class plans; a binary plan (network.num_classes 2) needs one of {', '.join(BINARY_LOSSES)}"]
    return []


def _sha256(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def _build(cls: type, d: Any, where: str, source: Optional[Union[str, Path]]) -> Any:
    """Instantiate dataclass ``cls`` from ``d`` strictly: unknown keys and wrong types are PlanErrors."""
    if not isinstance(d, dict):
        raise PlanError(f"{where or 'plan'} must be an object", source)
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise PlanError(f"unknown key(s) {', '.join(where + k for k in unknown)}", source)
    kwargs = {}
    for name, value in d.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value, f"{where}{name}.", source)
        else:
            kwargs[name] = _check_type(value, hint, f"{where}{name}", source)
    return cls(**kwargs)


def _check_type(value: Any, hint: Any, key: str, source: Optional[Union[str, Path]]) -> Any:
    origin = getattr(hint, "__origin__", None)
    args = getattr(hint, "__args__", ())
    if origin is Union:  # Optional[X]
        if value is None:
            return None
        return _check_type(value, [a for a in args if a is not type(None)][0], key, source)
    if origin in (dict, Dict):
        if not isinstance(value, dict):
            raise PlanError(f"{key} must be an object, got {value!r}", source)
        return value
    if origin in (list, List):
        if not isinstance(value, list):
            raise PlanError(f"{key} must be a list, got {value!r}", source)
        return [_check_type(v, args[0], f"{key}[]", source) for v in value] if args else value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise PlanError(f"{key} must be a number, got {value!r}", source)
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise PlanError(f"{key} must be an integer, got {value!r}", source)
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise PlanError(f"{key} must be true or false, got {value!r}", source)
        return value
    if hint is str:
        if not isinstance(value, str):
            raise PlanError(f"{key} must be a string, got {value!r}", source)
        return value
    return value


def preset_path(name: str) -> Path:
    """Path of a shipped preset (``plans/NAME.json``), or of a user's own plan file."""
    candidate = Path(name)
    if candidate.suffix == ".json" and candidate.exists():
        return candidate
    from importlib import resources

    try:
        folder = resources.files("deepwml.presets")
        available = sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".json"))
        path = folder / f"{name}.json"
        if path.is_file():
            return Path(str(path))
    except ModuleNotFoundError:
        available = []
    raise PlanError(f"no plan preset {name!r}; shipped presets: {', '.join(available) or 'none'} (or give a path to a .json plan)")


def load_preset(name: str) -> Plan:
    """Load a shipped preset (or a plan file) by name."""
    return Plan.load(preset_path(name))
