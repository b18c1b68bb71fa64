"""Prediction speed and memory of the paper network (U-Net 64…1024, 256×256) on this machine, fp32 and bf16.

Prints seconds per slice and per 25-slice case, model only and end to end (read, preprocess, infer, write),
the medians of several runs; peak memory (ru_maxrss); and how far bf16 masks agree with fp32 masks.

Speed needs no trained weights (random ones cost the same). Agreement does: masks of a random network are
meaningless, so it is measured with a trained model given by --agreement-model (for example the cpu_fast model
deepwml_demo trains) on the scans given by --agreement-images, comparing the final masks on each scan's own grid;
without one, a small U-Net is trained here for a few minutes on synthetic FLAIR (a weak model: read its
reference Dice before trusting its agreement figure).

    python benchmarks/predict.py                 # all figures (tens of minutes on a 2-core CPU)
    python benchmarks/predict.py --runs 1 --quick  # one run, bf16 end to end skipped
    python benchmarks/predict.py --cpu-fast-only --baseline /tmp/old_checkout --cohort 200  # issue #15 figures
    python benchmarks/predict.py --cpu-fast-only --nnunet-cmd "..."  # + nnU-Net v2: see benchmarks/nnunet_baseline.py
    python benchmarks/predict.py --skip-speed --agreement-model RESULTS/Dataset501_Synth/cpu_fast \
        --agreement-images RAW/Dataset501_Synth/imagesTr/CSVD1_003.nii.gz ...
"""
from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import numpy as np
import torch

from deepwml.imageio import Geometry, Image, read_image, write_image
from deepwml.evaluation.case_metrics import dice
from deepwml.inference.model_loading import build_fold_networks, check_model, load_fold_states
from deepwml.inference.inputs import discover_cases
from deepwml.inference.pipeline import prepare_case
from deepwml.inference.predictor import SlicePredictor, inference_batches
from deepwml.inference.run import PredictRequest, predict
from deepwml.models import network_spec
from deepwml.planning.plan import Plan, load_preset
from deepwml.preprocessing import revert_to_original
from deepwml.preprocessing.transforms import preprocess_arrays
from deepwml.synthetic.generate import generate_case
from deepwml.training.device import DeviceSetup, cpu_has_native_bf16, physical_cores
from machine_load import load_line  # benchmarks/machine_load.py, next to this script
from predict_cpu_fast import cohort, end_to_end, toy_models


CPU = torch.device("cpu")


def cpu_setup(name: str) -> DeviceSetup:
    """CPU inference in fp32 or bf16 autocast (forced, to measure it even where it is emulated)."""
    return DeviceSetup(CPU, torch.bfloat16 if name == "bf16" else None, channels_last=True, threads=torch.get_num_threads())


def peak_rss_gib() -> float:
    """Peak resident memory of this process so far (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def median_seconds(fn: Callable[[], None], runs: int) -> float:
    """Median wall time of ``runs`` calls."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def synthetic_case(centre: str, index: int, n_slices: int = 0) -> Tuple[np.ndarray, np.ndarray, Geometry]:
    """A synthetic FLAIR case; with ``n_slices`` its slices are resampled by index to exactly that many."""
    case = generate_case(centre, index, seed=0)
    image, label, g = case.image, case.label, case.geometry
    if n_slices:
        pick = np.linspace(0, image.shape[0] - 1, n_slices).round().astype(int)
        image, label = image[pick], label[pick]
        g = Geometry((g.size[0], g.size[1], n_slices), g.spacing, g.origin, g.direction)
    return image, label, g


def speed(args: argparse.Namespace, scratch: Path) -> None:
    """Model-only and end-to-end timings of the paper network, fp32 then bf16."""
    plan = load_preset("paper")
    model_dir = toy_models().write_model_dir(scratch / "results" / "Dataset990_Bench" / "paper", plan, folds=(0,), kind="random")
    cases = []
    for k in range(args.cases):
        image, _, geometry = synthetic_case("MS#1", k + 1, args.slices)  # MS#1 stores 512² at 0.47 mm or 256² at 0.94 mm
        cases.append(write_image(image.astype(np.int16), geometry, scratch / "in" / f"case{k}.nii.gz"))
    print(f"input: {args.cases} synthetic case(s), {args.slices} slices of {image.shape[1]}x{image.shape[2]}; "
          f"plan 'paper' (U-Net {plan.network.features}, matrix {plan.preprocessing.matrix}), random weights")
    case = discover_cases(cases[0])[0]
    start = time.perf_counter()
    prepared = prepare_case(case, plan)
    print(f"read + preprocess one case: {time.perf_counter() - start:.2f} s (single run)")
    spec = check_model(model_dir)
    net = build_fold_networks(spec, load_fold_states(spec))
    has_bf16 = cpu_has_native_bf16()
    print(f"CPU hardware bf16 (AVX512-BF16/AMX): {'yes' if has_bf16 else 'NO - bf16 is emulated and slow here'}; "
          f"torch threads {torch.get_num_threads()}")
    stack, head = prepared.image_pp[0], prepared.head  # the single FLAIR channel [S, H, W]
    batches = inference_batches(head, stack.shape, network_spec(plan.network), plan.inference.batch_size)
    computed = sum(len(b.slices) * (b.rows.stop - b.rows.start) * (b.cols.stop - b.cols.start) for b in batches) / stack.size
    print(f"head box: the network computes {computed:.0%} of the preprocessed pixels of this case")
    for name in ("fp32", "bf16"):
        x, h, runs = stack, head, args.runs
        if name == "bf16" and not has_bf16:
            # emulated bf16 runs ~10x slower: time one batch of slices, once, instead of the whole case
            x, h, runs = stack[: plan.inference.batch_size], head[: plan.inference.batch_size], 1
        predictors = {crop: SlicePredictor(net, plan, cpu_setup(name), crop=crop) for crop in (True, False)}
        predictors[True].forward(x[:1])  # warm-up: oneDNN picks kernels on first use
        times: Dict[bool, List[float]] = {True: [], False: []}
        for _ in range(runs):
            for crop in (True, False):  # interleaved, so that load drifting on a shared machine hits both alike
                times[crop].append(median_seconds(lambda: predictors[crop].predict(x, h), 1))  # noqa: B023 (called at once)
        for crop in (True, False):
            per_slice = statistics.median(times[crop]) / len(x)
            label = "head box" if crop else "full 256x256"
            print(f"model only  {name}  {label:13s}: {per_slice:.3f} s/slice over {len(x)} slices -> "
                  f"{per_slice * args.slices:.1f} s per {args.slices}-slice case (median of {runs}); peak RSS so far {peak_rss_gib():.2f} GiB")
    # end to end with the same network set to an intensity threshold: the same arithmetic as random weights, but a
    # mask like a real one (tens to hundreds of lesions); random weights call half the head lesion, thousands of
    # specks, and would time the lesion table and pictures of a mask no model gives
    model_dir = toy_models().write_model_dir(scratch / "results" / "Dataset991_Bench" / "paper", plan, folds=(0,), kind="threshold")
    print("end to end: the same network with its weights set to a smoothed intensity threshold (realistic masks)")
    for name in ("fp32", "bf16"):
        if name == "bf16" and not has_bf16 and args.quick:
            print("end to end  bf16: skipped (--quick, no hardware bf16)")
            continue
        request = PredictRequest(input=scratch / "in", output=scratch / f"out_{name}", model_dir=model_dir, overwrite=True,
                                 allow_bf16=name == "bf16", force_bf16=name == "bf16")
        runs = args.runs if (name == "fp32" or has_bf16) else 1
        totals = []
        for _ in range(runs):
            report = predict(request)
            totals.append(report.seconds)
        total = statistics.median(totals)
        print(f"end to end  {name}: {total:.1f} s for {args.cases} case(s) incl. model load -> {total / args.cases:.1f} s per "
              f"{args.slices}-slice case, {total / args.cases / args.slices:.3f} s/slice (median of {runs}); peak RSS so far {peak_rss_gib():.2f} GiB")


def _train_small_model(plan: Plan, train: List[Tuple[np.ndarray, np.ndarray]], iterations: int, seed: int = 0) -> Dict:
    """Brief BCE + soft-Dice training on lesion slices: a weak model, so its reference Dice is printed with the agreement."""
    from deepwml.models import build_network

    toy_models()  # puts deepwml_testing (repository root, not installed) on the path
    from deepwml_testing.trained_toy import fit

    torch.manual_seed(seed)
    net = build_network(plan.network)
    images = np.concatenate([x for x, _ in train]).astype(np.float32)
    labels = np.concatenate([(y == 1) for _, y in train]).astype(np.float32)
    lesion_slices = np.flatnonzero(labels.any(axis=(1, 2)))
    return fit(net, images, labels, iterations, plan.training.batch_size, seed, pool=lesion_slices).state_dict()


def small_model(features: Tuple[int, ...], iterations: int) -> Tuple[Plan, torch.nn.Module, Tuple, float]:
    """A U-Net without normalisation at 128x128 trained here on four synthetic cases: (plan, network, the held-out
    fifth case as (image, label, head), seconds it took)."""
    from deepwml.models import build_network

    plan = toy_models().tiny_plan(matrix=128, features=features, norm="none")
    plan.training.batch_size = 8
    start = time.perf_counter()
    data = []
    for k, centre in enumerate(("MS#1", "CSVD#4", "MS#3", "CSVD#1", "CSVD#3")):
        image, label, geometry = synthetic_case(centre, k + 1)
        result = preprocess_arrays(Image(image.astype(np.float32), geometry), plan, label)
        data.append((result.image[0], result.label, result.head))
    net = build_network(plan.network)
    net.load_state_dict(_train_small_model(plan, [(x, y) for x, y, _ in data[:-1]], iterations))
    return plan, net.eval(), data[-1], time.perf_counter() - start


def _masks_fp32_bf16(nets: List[torch.nn.Module], plan: Plan, prepared) -> Dict[str, np.ndarray]:
    """The case's masks on its own grid, predicted in fp32 and in bf16 autocast."""
    masks = {}
    for name in ("fp32", "bf16"):
        probs_pp = SlicePredictor(nets, plan, cpu_setup(name)).predict(prepared.image_pp, prepared.head)
        masks[name] = revert_to_original(probs_pp, prepared.props, order=1) >= plan.inference.threshold
    return masks


def agreement_with_model(model_dir: Path, images: List[Path]) -> None:
    """Dice between fp32 and bf16 masks of a trained model (e.g. one from deepwml_demo) on the given scans."""
    spec = check_model(model_dir)
    nets = build_fold_networks(spec, load_fold_states(spec))
    pooled = {"fp32": 0, "bf16": 0, "both": 0}
    print(f"agreement model: {model_dir} (U-Net {spec.plan.network.features}, norm {spec.plan.network.norm}, "
          f"matrix {spec.plan.preprocessing.matrix}, folds {' '.join(spec.folds)})")
    for path in images:
        case = discover_cases(path)[0]
        masks = _masks_fp32_bf16(nets, spec.plan, prepare_case(case, spec.plan))
        label_path = path.parent.parent / path.parent.name.replace("images", "labels") / path.name
        reference = ""
        if label_path.is_file():
            label = read_image(label_path, dtype=None).array == 1
            reference = f", Dice(fp32 mask, reference) {dice(masks['fp32'], label):.3f}"
        pooled["fp32"] += int(np.count_nonzero(masks["fp32"]))
        pooled["bf16"] += int(np.count_nonzero(masks["bf16"]))
        pooled["both"] += int(np.count_nonzero(masks["fp32"] & masks["bf16"]))
        print(f"  {case.case_id}: Dice(bf16 mask, fp32 mask) {dice(masks['bf16'], masks['fp32']):.4f}{reference}")
    total = pooled["fp32"] + pooled["bf16"]
    print(f"pooled over {len(images)} case(s): Dice(bf16, fp32) {2 * pooled['both'] / max(1, total):.4f} "
          f"({pooled['fp32']} vs {pooled['bf16']} lesion voxels)")


def agreement_small_model(args: argparse.Namespace) -> None:
    """Fallback without a trained model: a small U-Net trained here briefly, fp32 vs bf16 on a held-out synthetic case."""
    plan, net, (x, y, head), seconds = small_model((8, 16, 32, 64), args.train_iterations)
    print(f"agreement model: U-Net {plan.network.features} at {plan.preprocessing.matrix}, trained {args.train_iterations} "
          f"iterations here on 4 synthetic cases ({seconds:.0f} s incl. data); pass --agreement-model "
          "for a properly trained one")
    masks = {name: SlicePredictor([net], plan, cpu_setup(name)).predict(x, head) >= plan.inference.threshold
             for name in ("fp32", "bf16")}
    print(f"held-out case: Dice(fp32 mask, reference) {dice(masks['fp32'], y == 1):.3f}; "
          f"Dice(bf16 mask, fp32 mask) {dice(masks['bf16'], masks['fp32']):.4f} "
          f"({np.count_nonzero(masks['fp32'])} vs {np.count_nonzero(masks['bf16'])} lesion pixels)")


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="runs per timing; the median is printed")
    parser.add_argument("--cases", type=int, default=2, help="cases in the end-to-end run")
    parser.add_argument("--slices", type=int, default=25, help="slices per case")
    parser.add_argument("--train-iterations", type=int, default=600, help="training iterations of the agreement model")
    parser.add_argument("--agreement-model", help="a trained PLAN folder for the fp32/bf16 agreement (e.g. from deepwml_demo)")
    parser.add_argument("--agreement-images", nargs="+", default=[], help="scans for --agreement-model (labels are "
                        "picked up from a sibling labelsTr/labelsTs folder when present)")
    parser.add_argument("--quick", action="store_true", help="skip end-to-end bf16 on CPUs without hardware bf16")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-agreement", action="store_true")
    parser.add_argument("--cpu-fast-only", action="store_true", help="only the cpu_fast end-to-end (and cohort) figures")
    parser.add_argument("--baseline", help="another DeepWML checkout whose deepwml_predict runs on the same files, interleaved")
    parser.add_argument("--nnunet-cmd", help="e.g. 'nnUNetv2_predict -d 500 -c 2d -f 0 --disable_tta' (-i/-o are added); benchmarks/nnunet_baseline.py prints one")
    parser.add_argument("--cpu-fast-model", choices=("builtin", "random"), default="builtin",
                        help="the model of the cpu_fast end-to-end figures: the shipped one (default) or cpu_fast with random weights "
                        "(thousands of one-voxel lesions per case: a worst case for the lesion tables)")
    parser.add_argument("--cohort", type=int, default=0, help="also predict a cohort of N scans: cores busy, memory at case 10 vs N")
    args = parser.parse_args()
    torch.set_num_threads(physical_cores())
    print(f"deepwml benchmark: predict - torch {torch.__version__}, {physical_cores()} core(s); {load_line()}")
    scratch = Path(tempfile.mkdtemp(prefix="deepwml_bench_predict_"))
    try:
        end_to_end(scratch, args.runs, Path(args.baseline) if args.baseline else None, args.nnunet_cmd, args.cpu_fast_model)
        if args.cohort:
            cohort(scratch, args.cohort)
        if args.cpu_fast_only:
            print(f"after the run: {load_line()}")
            return
        if not args.skip_speed:
            speed(args, scratch)
        if args.agreement_model:
            agreement_with_model(Path(args.agreement_model), [Path(p) for p in args.agreement_images])
        elif not args.skip_agreement:
            agreement_small_model(args)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"peak RSS of the whole benchmark: {peak_rss_gib():.2f} GiB")


if __name__ == "__main__":
    main()
