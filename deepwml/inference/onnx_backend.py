"""Prediction without torch: a model's fold networks as ONNX graphs, run by ONNX Runtime on the CPU.

Why: on the 2-core machines of this project ``import torch`` alone takes 2.0-2.2 s of a 4 s one-scan
``deepwml_predict`` run, and onnxruntime imports in about 0.15 s. Its fp32 convolutions also ran the shipped
cpu_fast network (0.49 M parameters) 2.2x faster than torch's fp32 and as fast as torch's native bf16 on an
AVX512-BF16 EPYC, with logits within 2e-4 of torch's fp32 (``benchmarks/predict_one_case.py`` times both).
Wide networks such as the paper's U-Net (31 M) are compute-bound: there ONNX Runtime's fp32 only matched torch's
fp32 (0.50 against 0.56 s per 256² slice), while torch's bf16 autocast on a CPU that computes bf16 natively was 1.9x
faster and its int8 path (deepwml.inference.int8) 1.6-2x faster on long runs, so ``auto`` keeps torch for them.

Safety: a graph is never read from a model folder. It is exported here from the weights-only checkpoint with
DeepWML's own network code, checked against torch on a test input, and kept in the per-user cache
(deepwml.utils.user_cache) under a key made of the checkpoint's bytes, plans.json, the network code and this
module, together with the weights' digest, the plan check's verdict, the calibration temperatures and the stored
postprocessing (deepwml.inference.postprocessing), so that a later run needs neither torch nor the checkpoint's
unpickler. Graphs reach ONNX Runtime as bytes: they can name no external file.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.metadata
import importlib.util
import io
import json
import sys
import warnings
from dataclasses import astuple, dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from deepwml.inference.batches import predict_stack, slices_to_mirror
from deepwml.inference.postprocessing import MaskSettings
from deepwml.models import NETWORKS, NORMS, network_spec
from deepwml.planning.plan import Plan
from deepwml.preprocessing.network_input import as_channels, require_channels
from deepwml.utils.cpu import physical_cores
from deepwml.utils.errors import DeepWMLError
from deepwml.utils.user_cache import cache_dir, cache_usable, cached_arrays, content_key

if TYPE_CHECKING:
    from deepwml.inference.model_loading import ModelSpec

BACKENDS = ("auto", "torch", "onnx")
#: networks with at least this many parameters are compute-bound (see the module's docstring)
WIDE_NETWORK_PARAMETERS = 5_000_000
#: an exported graph's probabilities may differ from torch's fp32 by at most this on the export check
EXPORT_TOLERANCE = 1e-3
OPSET = 17
#: what a cache entry of one fold holds
ENTRY_ARRAYS = ("graph", "digest", "temperatures", "postprocessing", "fits")
#: an entry's postprocessing array when the checkpoint stores none
NO_POSTPROCESSING = (np.nan,) * 6
INPUT, OUTPUT = "image", "logits"


class GraphUnavailable(DeepWMLError):
    """A fold network could not be made into a checked graph (no exporter, an untraceable network, a mismatch)."""


@dataclass(frozen=True)
class BackendChoice:
    """Which engine computes the networks ('torch' or 'onnx') and why."""

    name: str
    reason: str


@dataclass(frozen=True)
class FoldGraph:
    """One fold network as a checked ONNX graph, with what prediction reads from its checkpoint."""

    graph: bytes
    #: deepwml.inference.model_loading.weights_digest of the fold's weights (the producer record of the outputs)
    digest: str
    #: the checkpoint's temperatures below and above the threshold (deepwml_calibrate; (1, 1): not calibrated)
    temperatures: Tuple[float, float]
    #: the checkpoint's stored postprocessing (deepwml_find_postprocessing; None: none)
    postprocessing: Optional[MaskSettings] = None
    #: how its stored fits segmented their scans (deepwml.inference.fit_agreement.checkpoint_fits)
    fits: Optional[Dict[str, Dict[str, Any]]] = None


@dataclass(frozen=True)
class RuntimeSetup:
    """The CPU set-up of an ONNX Runtime run, read where prediction reads a torch DeviceSetup (device, threads)."""

    threads: int
    device: Any = dataclasses.field(default_factory=lambda: SimpleNamespace(type="cpu"))

    def describe(self) -> str:
        """One line for the log."""
        version = importlib.metadata.version("onnxruntime")
        return f"cpu (fp32, ONNX Runtime {version}, {self.threads} thread{'s' if self.threads != 1 else ''})"


def runtime_available() -> bool:
    """True when onnxruntime is installed (it is not imported here)."""
    return importlib.util.find_spec("onnxruntime") is not None


#: what a GPU driver puts on a Linux machine (NVIDIA, NVIDIA under WSL2, AMD ROCm), in containers too
GPU_DEVICE_FILES = ("/proc/driver/nvidia/version", "/dev/nvidiactl", "/dev/dxg", "/dev/kfd")


def torch_is_cpu_build() -> bool:
    """True when the installed torch is a CPU-only build (its version ends in '+cpu'): no GPU to ask about."""
    try:
        return importlib.metadata.version("torch").endswith("+cpu")
    except importlib.metadata.PackageNotFoundError:
        return True


def gpu_possible() -> bool:
    """False when torch cannot see a GPU, known without importing it (2 s): a CPU-only build, macOS (DeepWML uses
    no Apple GPU), or Linux without any GPU driver's files; True where only torch can tell."""
    if torch_is_cpu_build() or sys.platform == "darwin":
        return False
    if sys.platform.startswith("linux"):
        return any(Path(p).exists() for p in GPU_DEVICE_FILES)
    return True


def choose_backend(requested: str, device: str, plans: Sequence[Plan], int8: str = "off",
                   force_bf16: bool = False) -> BackendChoice:
    """The engine for a prediction run of ``plans``' networks: --backend, else ONNX Runtime wherever it serves.

    ``auto`` takes torch on a GPU, for --int8 on and --force-bf16 (torch paths), for networks a plugin defines, for
    wide networks (torch's bf16 or int8 is faster there), and when the user cache is off (each run would export
    again)."""
    requested = (requested or "auto").lower()
    if requested not in BACKENDS:
        raise DeepWMLError(f"--backend must be one of {', '.join(BACKENDS)}, got {requested!r}")
    if requested == "torch":
        return BackendChoice("torch", "asked for")
    problem = _onnx_problem(device, plans, int8, force_bf16)
    if requested == "onnx":
        if problem:
            raise DeepWMLError(f"--backend onnx: {problem}")
        return BackendChoice("onnx", "asked for")
    if problem:
        return BackendChoice("torch", problem)
    if any(network_spec(p.network).parameter_count() >= WIDE_NETWORK_PARAMETERS for p in plans):
        return BackendChoice("torch", "a wide network runs faster in torch (bf16 where the CPU computes it, else int8)")
    if not cache_usable():
        return BackendChoice("torch", "the user cache (DEEPWML_CACHE_DIR) is off or cannot be made, so every run would "
                                      "export the graphs again")
    return BackendChoice("onnx", "CPU")


def _onnx_problem(device: str, plans: Sequence[Plan], int8: str, force_bf16: bool) -> Optional[str]:
    """Why ONNX Runtime cannot compute this run, or None."""
    device = (device or "auto").lower()
    if not runtime_available():
        return "onnxruntime is not installed"
    if device.startswith("cuda"):
        return f"it runs on the CPU, and --device {device} was asked for"
    if device == "auto" and gpu_possible():
        import torch  # a GPU build of torch on a machine with a GPU driver: only torch can say whether it sees a GPU

        if torch.cuda.is_available():
            return "a CUDA GPU is present (torch computes there)"
    if int8 == "on":
        return "--int8 on quantises with torch"
    if force_bf16:
        return "--force-bf16 computes with torch"
    for plan in plans:
        if not (NETWORKS.is_builtin(plan.network.architecture) and NORMS.is_builtin(plan.network.norm)):
            return f"network {plan.network.architecture!r} with norm {plan.network.norm!r} comes from a plugin"
    return None


def fold_graphs(spec: "ModelSpec") -> List[FoldGraph]:
    """Every fold of ``spec`` as a checked graph, from the user cache or exported now (which imports torch)."""
    plan_bytes = (spec.folder / "plans.json").read_bytes()
    code = _code_fingerprint()
    graphs = []
    for name, path in zip(spec.folds, spec.checkpoints):
        key = content_key([_file_digest(path), plan_bytes, code, str(OPSET)])
        # one entry per checkpoint file: a re-trained or re-calibrated fold replaces its own entry only
        entry = "onnx-" + content_key([str(path.resolve())])[:16]
        one = dataclasses.replace(spec, folds=[name], checkpoints=[path], temperatures=None, postprocessing=None,
                                  fits=None)
        arrays = cached_arrays(entry, key, lambda one=one: _export_fold(one))
        if set(arrays) != set(ENTRY_ARRAYS):  # not an entry this code wrote: made again, not trusted
            arrays = _export_fold(one)
        stored = arrays["postprocessing"]
        graphs.append(FoldGraph(arrays["graph"].tobytes(), str(arrays["digest"]),
                                (float(arrays["temperatures"][0]), float(arrays["temperatures"][1])),
                                None if np.isnan(stored).any() else _stored_settings(stored),
                                json.loads(arrays["fits"].tobytes().decode("utf-8"))))
    spec.temperatures = [g.temperatures for g in graphs]
    spec.postprocessing = [g.postprocessing for g in graphs]
    spec.fits = [g.fits for g in graphs]
    return graphs


def _stored_settings(stored: np.ndarray) -> MaskSettings:
    """A cache entry's postprocessing array (threshold, smallest lesion, peak, TTA as 0/1, lesion contrast, lesion
    spread: an entry from before the spread bound has five) as settings."""
    threshold, min_ml, min_peak, tta, min_contrast, *spread = (float(v) for v in stored)
    return MaskSettings(threshold, min_ml, min_peak, tta > 0.5, min_contrast, spread[0] if spread else 0.0)


def prepare_graphs(model_dir: Path) -> str:
    """Export a model's folds for ONNX Runtime now (kept in the user cache) when deepwml_predict would compute with it
    on this machine, so that its first prediction does not pay for it; what was done, for the log."""
    from deepwml.inference.model_loading import check_model

    spec = check_model(model_dir)
    choice = choose_backend("auto", "auto", [spec.plan])
    if choice.name != "onnx":
        return f"predictions compute with torch here ({choice.reason})"
    try:
        fold_graphs(spec)
    except GraphUnavailable as e:
        return f"predictions compute with torch here: {e.problem}"
    return "prepared for ONNX Runtime (kept in the user cache)"


def _file_digest(path: Path) -> str:
    """sha256 of a file read in 8 MB blocks (a paper-network checkpoint is 124 MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 23), b""):
            digest.update(block)
    return digest.hexdigest()


@functools.lru_cache(maxsize=1)
def _code_fingerprint() -> str:
    """The source of DeepWML's network code and of this module: a graph exported by other code is another graph."""
    import deepwml.models

    files = sorted(Path(deepwml.models.__file__).parent.glob("*.py")) + [Path(__file__)]
    return content_key([f.read_bytes() for f in files])


def _export_fold(spec: "ModelSpec") -> dict:
    """Read one fold's checkpoint weights-only (checked against plans.json), export its network and check the graph."""
    if importlib.util.find_spec("onnx") is None:
        raise GraphUnavailable("exporting the network to ONNX needs the onnx package (pip install onnx)", spec.checkpoints[0])
    from deepwml.inference.model_loading import build_fold_networks, load_fold_states, weights_digest

    state = load_fold_states(spec)[0]
    net = build_fold_networks(spec, [state])[0]
    # after the checks: a refused checkpoint is one line of error, nothing else
    print(f"[deepwml_predict] note: exporting {spec.checkpoints[0]} for ONNX Runtime (once: kept in the user cache, "
          f"{cache_dir() or 'which is off'})", file=sys.stderr)
    graph = export_graph(net, spec.plan, spec.checkpoints[0])
    check_graph(graph, net, spec.plan, spec.checkpoints[0])
    return {"graph": np.frombuffer(graph, dtype=np.uint8), "digest": np.array(weights_digest(state)),
            "temperatures": np.array(spec.temperatures[0], dtype=np.float64),
            "postprocessing": np.array(NO_POSTPROCESSING if spec.postprocessing[0] is None else
                                       astuple(spec.postprocessing[0]), dtype=np.float64),
            "fits": np.frombuffer(json.dumps(spec.fits[0]).encode("utf-8"), dtype=np.uint8)}


def export_graph(net: Any, plan: Plan, source: Path) -> bytes:
    """The network (fp32, eval mode) as ONNX bytes, batch, height and width left free."""
    import torch

    spec = network_spec(plan.network)
    m = spec.size_multiple
    example = torch.zeros(1, spec.input_spec.in_channels, 2 * m, 2 * m)
    buffer = io.BytesIO()
    axes = {0: "batch", 2: "height", 3: "width"}
    try:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            # tracer notes and instance norm's "train=True" note (it always normalises by the input's own statistics)
            warnings.simplefilter("ignore")
            torch.onnx.export(net.float().eval(), example, buffer, dynamo=False, opset_version=OPSET,
                              input_names=[INPUT], output_names=[OUTPUT], dynamic_axes={INPUT: axes, OUTPUT: axes})
    except Exception as e:  # noqa: BLE001 - whatever the exporter raises: the run falls back to torch or says why
        raise GraphUnavailable(f"the network could not be exported to ONNX ({type(e).__name__}: {str(e)[:200]})", source) from None
    return buffer.getvalue()


def check_graph(graph: bytes, net: Any, plan: Plan, source: Path) -> None:
    """Refuse a graph whose probabilities differ from torch's fp32 on a test input of another size than the export's."""
    import torch

    spec = network_spec(plan.network)
    m = spec.size_multiple
    x = np.random.default_rng(0).standard_normal((2, spec.input_spec.in_channels, 3 * m, 5 * m)).astype(np.float32)
    with torch.no_grad():
        expected = _probabilities(net(torch.from_numpy(x)).float().numpy(), plan.network.out_channels)
    got = _probabilities(session(graph, 1).run([OUTPUT], {INPUT: x})[0], plan.network.out_channels)
    difference = float(np.abs(got - expected).max()) if got.shape == expected.shape else float("inf")
    if not difference <= EXPORT_TOLERANCE:
        raise GraphUnavailable(f"the exported graph disagrees with the network (probabilities differ by {difference:.2g})", source)


def session(graph: bytes, threads: int) -> Any:
    """An ONNX Runtime CPU session of ``graph`` computing with ``threads`` threads (each caller's run on its own thread)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, int(threads))
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: its notes about the graph are not the user's business
    return ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])


def _probabilities(logits: np.ndarray, out_channels: int) -> np.ndarray:
    """Sigmoid of one logit channel, softmax over several, in float32."""
    logits = logits.astype(np.float32, copy=False)
    if out_channels == 1:
        return 0.5 * (1.0 + np.tanh(0.5 * logits))  # = sigmoid, without overflow in exp
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def runtime_setup(threads: Optional[int] = None) -> RuntimeSetup:
    """The CPU set-up of an ONNX Runtime run: every physical core unless ``threads``."""
    return RuntimeSetup(threads=int(threads or physical_cores()))


class GraphPredictor:
    """SlicePredictor's counterpart on ONNX Runtime: the same batches, crops, flips and fold averaging, in fp32."""

    def __init__(self, graphs: Sequence[FoldGraph], plan: Plan, threads: int, tta: bool = False,
                 batch_size: Optional[int] = None, crop: bool = True, mirror_floor: Optional[float] = None) -> None:
        if not graphs:
            raise DeepWMLError("a graph predictor needs at least one fold graph")
        self.plan = plan
        self.sessions = [session(g.graph, threads) for g in graphs]
        self.tta = tta
        #: flip TTA mirrors only the slices whose first pass reaches this (deepwml.inference.batches.mirror_floor)
        self.mirror_floor = mirror_floor
        self.batch_size = int(batch_size or plan.inference.batch_size)
        self.crop = crop
        self.network = network_spec(plan.network)
        self.input_spec = self.network.input_spec
        self.multiple = self.network.size_multiple
        self.out_channels = plan.network.out_channels
        #: int8 is a torch path; the run's report reads this list
        self.int8_decisions: List[Any] = []

    def forward(self, batch: np.ndarray) -> np.ndarray:
        """Mean probability over folds (and, with flip TTA, over the flips of the slices whose first pass reaches the
        mirror floor) for network input [B, C·k, H, W] ([B, H, W]: one channel), shaped as SlicePredictor.forward
        returns it."""
        x = np.ascontiguousarray(batch, dtype=np.float32)
        x = x[:, None] if x.ndim == 3 else x
        if x.shape[1] != self.input_spec.in_channels:
            raise ValueError(f"the network takes {self.input_spec.in_channels} input channel(s), the batch has {x.shape[1]}")
        h, w = x.shape[-2:]
        ph, pw = (-h) % self.multiple, (-w) % self.multiple
        if ph or pw:  # each plane's lowest value, as the torch predictor pads (inference.predictor._pad_to_multiple)
            padded = np.empty(x.shape[:2] + (h + ph, w + pw), dtype=np.float32)
            padded[...] = x.min(axis=(-2, -1), keepdims=True)
            padded[..., :h, :w] = x
            x = padded
        total = np.zeros((x.shape[0], self.out_channels, h, w), dtype=np.float32)
        for sess in self.sessions:
            total += _probabilities(sess.run([OUTPUT], {INPUT: x})[0][..., :h, :w], self.out_channels)
        passes = np.full(x.shape[0], len(self.sessions), dtype=np.float32)
        if self.tta:
            floor = self.mirror_floor if self.out_channels == 1 else None
            mirror = slices_to_mirror(total.reshape(x.shape[0], -1).max(axis=1) / len(self.sessions), floor)
            if mirror.size:
                mirrored = np.ascontiguousarray(x[mirror][..., ::-1])
                for sess in self.sessions:
                    # mirrored back before the padding (at the far end) is cut off
                    logits = sess.run([OUTPUT], {INPUT: mirrored})[0][..., ::-1]
                    total[mirror] += _probabilities(logits[..., :h, :w], self.out_channels)
                passes[mirror] *= 2
        total /= passes[:, None, None, None]
        return total[:, 0] if self.out_channels == 1 else total

    def predict(self, image_pp: np.ndarray, head: Optional[np.ndarray] = None) -> np.ndarray:
        """Probabilities of a preprocessed stack [C, S, H, W], as SlicePredictor.predict."""
        image_pp = as_channels(np.asarray(image_pp))
        require_channels(image_pp, self.input_spec.channels, "the preprocessed image")
        return predict_stack(image_pp, head if self.crop else None, self.forward, self.network, self.input_spec, self.batch_size,
                             self.out_channels, self.plan.inference.crop_margin)
