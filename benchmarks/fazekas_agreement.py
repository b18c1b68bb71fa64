"""How well the Fazekas estimate (deepwml.anatomy.fazekas) agrees with the synthetic generator's drawn grades, and
how the lesion location classes are distributed, on seeded synthetic CSVD and MS cases.

Location and Fazekas run on the generator's TRUTH anatomy map and TRUTH lesion mask; with --model PATH or
--builtin also on a model's predicted lesion mask, first with the truth anatomy, then with the anatomy map the
shipped anatomy model predicts (what deepwml_predict reports: both maps predicted). Agreement is the quadratic-weighted
kappa (computed here in numpy) and the confusion matrix (rows: drawn grade, columns: estimate). Only CSVD cases
carry drawn grades; MS cases add to the location-class distribution and the McDonald region counts. With a model,
every case's predicted lesions are also located with the predicted anatomy map and with the truth one, and the
location classes compared (with and without the map's cleanup, deepwml.anatomy.cleanup), and the supratentorial
lesion volume within / beyond 10 mm of the ventricles from the truth mask with the model's map and from the model's
mask and map set against the truth mask's with the truth map.

    nice -n 10 python benchmarks/fazekas_agreement.py [--csvd 30] [--ms 10] [--seed 0] [--builtin | --model PATH]
        [--anatomy-model PLAN_FOLDER]
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from deepwml.anatomy.labels import anatomy_from_truth
from deepwml.anatomy.location import CORTICAL, JUXTACORTICAL, LOCATIONS, SPLIT_COLUMNS
from deepwml.imageio import write_image
from deepwml.inference.lesion_report import lesion_table, summarize_case
from deepwml.synthetic.generate import SyntheticCase, generate_case
from machine_load import load_line  # benchmarks/machine_load.py, next to this script

CSVD_CENTRES = ("CSVD#1", "CSVD#2", "CSVD#3", "CSVD#4")
MS_CENTRES = ("MS#1", "MS#2", "MS#3", "MS#4")
GRADES = 4


def weighted_kappa(truth: np.ndarray, estimate: np.ndarray, n: int = GRADES) -> float:
    """Cohen's kappa with quadratic weights for grades 0..n-1 (1 perfect, 0 chance); NaN when undefined."""
    observed = confusion(truth, estimate, n).astype(float)
    total = observed.sum()
    if total == 0:
        return float("nan")
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0)) / total
    i, j = np.indices((n, n))
    weights = (i - j) ** 2 / (n - 1) ** 2
    denominator = float((weights * expected).sum())
    return float("nan") if denominator == 0 else 1.0 - float((weights * observed).sum()) / denominator


def confusion(truth: np.ndarray, estimate: np.ndarray, n: int = GRADES) -> np.ndarray:
    """n x n counts: rows the true grade, columns the estimate."""
    return np.bincount(np.asarray(truth, int) * n + np.asarray(estimate, int), minlength=n * n).reshape(n, n)


Predicted = Tuple[np.ndarray, Optional[np.ndarray], Optional[np.ndarray]]


def model_predictor(model: Path, work: Path, anatomy_model: Optional[Path] = None) -> Callable[[SyntheticCase], Predicted]:
    """A function giving a model's lesion mask of a synthetic case on its own grid (through the predictor API), the
    anatomy model's map (``anatomy_model``, else the shipped one) as deepwml_predict makes it and the same map without
    its cleanup (None, None when there is no anatomy model)."""
    from deepwml.anatomy.cleanup import lesions_to_tissue
    from deepwml.inference.anatomy import anatomy_map, anatomy_model_dir, load_anatomy_model
    from deepwml.inference.inputs import discover_cases
    from deepwml.inference.model_loading import build_fold_networks, check_model, load_fold_states
    from deepwml.inference.pipeline import prepare_case, probabilities_to_mask
    from deepwml.inference.predictor import SlicePredictor
    from deepwml.preprocessing import revert_to_original
    from deepwml.preprocessing.transforms import revert_label_probabilities
    from deepwml.training.device import setup_device

    spec = check_model(model)
    predictor = SlicePredictor(build_fold_networks(spec, load_fold_states(spec)), spec.plan, setup_device("cpu"))
    anatomy_dir = anatomy_model_dir(anatomy_model)
    anatomy = load_anatomy_model(anatomy_dir, setup_device("cpu")) if anatomy_dir else None

    def predict(case: SyntheticCase) -> Predicted:
        folder = work / case.case_id
        write_image(case.image, case.geometry, folder / f"{case.case_id}.nii.gz")
        prepared = prepare_case(discover_cases(folder)[0], spec.plan)
        probs = revert_to_original(predictor.predict(prepared.image_pp, prepared.head), prepared.props, order=1)
        amap = raw = None
        if anatomy is not None:
            a_in = anatomy.prepare(prepared.image)
            class_probs = anatomy.predict(a_in)
            # without the enclosed-cortex cleanup only: a lesion-aware model's lesions are given their tissue in both
            amap, raw = anatomy_map(class_probs, a_in.props), lesions_to_tissue(revert_label_probabilities(class_probs, a_in.props))
        return probabilities_to_mask(probs, 0.5), amap, raw

    return predict


def case_list(n_csvd: int, n_ms: int) -> List[tuple]:
    """(centre, index) pairs: the centres taken in turn, patients numbered per centre from 1."""
    out = []
    for centres, n in ((CSVD_CENTRES, n_csvd), (MS_CENTRES, n_ms)):
        out += [(centres[k % len(centres)], k // len(centres) + 1) for k in range(n)]
    return out


def report(name: str, truth: List[tuple], estimate: List[tuple]) -> None:
    """Kappa and confusion matrices of PV and deep grades."""
    if not truth:
        return
    t, e = np.array(truth), np.array(estimate)
    for k, part in enumerate(("periventricular", "deep")):
        exact = float(np.mean(t[:, k] == e[:, k]))
        print(f"{name} Fazekas {part}: quadratic-weighted kappa {weighted_kappa(t[:, k], e[:, k]):.3f}, exact agreement {exact:.2f} (n={len(t)})")
        print("  rows drawn 0-3, columns estimated 0-3:")
        for row in confusion(t[:, k], e[:, k]):
            print("   ", " ".join(f"{v:3d}" for v in row))


def main() -> None:
    """Generate, locate, grade, compare."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csvd", type=int, default=30, help="CSVD cases (drawn Fazekas grades)")
    parser.add_argument("--ms", type=int, default=10, help="MS cases (location classes and McDonald counts only)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", type=Path, help="also grade a model's predicted masks (PLAN folder)")
    parser.add_argument("--builtin", action="store_true", help="also grade the built-in model's predicted masks")
    parser.add_argument("--anatomy-model", type=Path, help="with --builtin or --model: this anatomy model's maps "
                        "instead of the shipped anatomy model's (PLAN folder)")
    args = parser.parse_args()
    print(load_line())
    predict: Optional[Callable[[SyntheticCase], Predicted]] = None
    work = Path(tempfile.mkdtemp(prefix="deepwml-fazekas-"))
    if args.builtin or args.model:
        from deepwml.pretrained import builtin_model_dir

        predict = model_predictor(builtin_model_dir() if args.builtin else args.model, work, args.anatomy_model)
    try:
        run_cases(args, predict, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def located(mask: np.ndarray, case: SyntheticCase, anatomy: np.ndarray) -> List[str]:
    """The location class of each lesion of ``mask`` with this anatomy map (the lesion table's order)."""
    return list(lesion_table(mask, case.geometry, anatomy)["location"])


def touches_reference(mask: np.ndarray, case: SyntheticCase) -> List[bool]:
    """Whether each lesion of ``mask`` (the lesion table's order) touches the case's true lesions: a true lesion as
    lesion F1 counts it, else a false one."""
    from deepwml.inference.lesion_report import lesion_id_labels

    ids, count = lesion_id_labels(mask, case.geometry.slice_axis_numpy)
    hit = np.zeros(count + 1, bool)
    hit[np.unique(ids[np.asarray(case.label) > 0])] = True
    return hit[1:].tolist()


def location_report(pairs: Dict[str, List[Tuple[str, str]]]) -> None:
    """How often the predicted anatomy map puts a predicted lesion in the class the truth map does, with and without
    the map's cleanup, and over the true lesions alone (those touching the truth mask); McDonald 2017 counts cortical
    and juxtacortical as one region."""
    merged = {CORTICAL: JUXTACORTICAL}
    for name, label in (("cleaned", "model anatomy (as deepwml_predict makes it)"), ("raw", "model anatomy without its cleanup"),
                        ("cleaned_true", "model anatomy (as deepwml_predict makes it), true lesions only")):
        chosen = pairs.get(name)
        if not chosen:
            continue
        same = np.mean([m == t for m, t in chosen])
        same_region = np.mean([merged.get(m, m) == merged.get(t, t) for m, t in chosen])
        print(f"location classes of the model mask's lesions, {label} against truth anatomy: agreement {same:.3f}, "
              f"cortical and juxtacortical as one {same_region:.3f} (n={len(chosen)})")
        classes = [c for c in LOCATIONS if any(c in pair for pair in chosen)]
        print("  rows truth, columns model: " + " / ".join(classes))
        for t in classes:
            print("   ", " ".join(f"{sum(1 for m, tt in chosen if tt == t and m == c):4d}" for c in classes))


def ten_mm_report(volumes: Dict[str, List[Tuple[float, float]]]) -> None:
    """How far the volumes within / beyond 10 mm of the ventricles move from the truth mask and map's when the model's
    anatomy map (and then its mask too) takes their place: median absolute difference, relative to the truth's
    median, and the correlation over cases."""
    truth = np.array(volumes["truth"])
    print(f"supratentorial lesion volume within / beyond 10 mm of the ventricles, truth mask and anatomy: median "
          f"{np.median(truth[:, 0]):.2f} / {np.median(truth[:, 1]):.2f} ml, share within {truth[:, 0].sum() / truth.sum():.2f} (n={len(truth)})")
    for key, label in (("model_anatomy", "truth mask, model anatomy"), ("model_both", "model mask, model anatomy")):
        if not volumes.get(key):
            continue
        other = np.array(volumes[key])
        parts = []
        for k, name in enumerate(("within", "beyond")):
            diff = np.abs(other[:, k] - truth[:, k])
            r = np.corrcoef(truth[:, k], other[:, k])[0, 1] if np.ptp(truth[:, k]) and np.ptp(other[:, k]) else float("nan")
            parts.append(f"{name}: median |difference| {np.median(diff):.3f} ml ({np.median(diff) / max(np.median(truth[:, k]), 1e-9):.0%} "
                         f"of the truth's median), r = {r:.3f}")
        share = other[:, 0].sum() / max(other.sum(), 1e-9)
        print(f"  {label}: " + "; ".join(parts) + f"; share within {share:.2f}")


def run_cases(args: argparse.Namespace, predict: Optional[Callable[[SyntheticCase], Predicted]], work: Path) -> None:
    """Generate, locate and grade every case, then print the figures."""
    grades: Dict[str, List[tuple]] = {"truth": [], "est_truth_mask": [], "est_model_mask": [], "est_model_both": []}
    locations: Dict[str, Counter] = {"CSVD": Counter(), "MS": Counter()}
    regions: Dict[str, Counter] = {"MS": Counter()}
    pairs: Dict[str, List[Tuple[str, str]]] = {"cleaned": [], "raw": [], "cleaned_true": []}
    seconds: List[float] = []
    volumes: Dict[str, List[Tuple[float, float]]] = {"truth": [], "model_anatomy": [], "model_both": []}
    for centre, index in case_list(args.csvd, args.ms):
        case = generate_case(centre, index, args.seed, truth=True)
        anatomy = anatomy_from_truth(case.truth)
        start = time.perf_counter()
        table = lesion_table(case.label, case.geometry, anatomy)
        summary = summarize_case(case.case_id, case.label, case.geometry, table, anatomy)
        seconds.append(time.perf_counter() - start)
        disease = case.meta.disease
        locations[disease].update(table["location"])
        fields = summary.anatomy
        volumes["truth"].append(tuple(fields[c] for c in SPLIT_COLUMNS))
        estimate = (fields["fazekas_periventricular"], fields["fazekas_deep"])
        line = f"{case.case_id} sev {case.meta.extra['severity']:.2f} lesions {len(table)} DIS regions {fields['mcdonald_dis_regions']}"
        if disease == "MS":
            regions["MS"][fields["mcdonald_dis_regions"]] += 1
        mask = amap = None
        if predict is not None:
            mask, amap, raw = predict(case)
            if amap is not None:
                truth_classes, model_classes = located(mask, case, anatomy), located(mask, case, amap)
                pairs["cleaned"] += list(zip(model_classes, truth_classes))
                pairs["cleaned_true"] += [pair for pair, true in zip(zip(model_classes, truth_classes), touches_reference(mask, case)) if true]
                pairs["raw"] += list(zip(located(mask, case, raw), truth_classes))
                for key, used in (("model_anatomy", case.label), ("model_both", mask)):
                    f = summarize_case(case.case_id, used, case.geometry, lesion_table(used, case.geometry, amap), amap).anatomy
                    volumes[key].append(tuple(f[c] for c in SPLIT_COLUMNS))
        if "fazekas_pv" in case.meta.extra:
            drawn = (case.meta.extra["fazekas_pv"], case.meta.extra["fazekas_deep"])
            grades["truth"].append(drawn)
            grades["est_truth_mask"].append(estimate)
            line += (f" drawn PV/deep {drawn[0]}/{drawn[1]} estimated {estimate[0]}/{estimate[1]}"
                     f" (lining {fields['fazekas_pv_lining_mm']} mm, reach {fields['fazekas_pv_extent_mm']} mm,"
                     f" deep axis {fields['fazekas_deep_long_axis_mm']} mm)")
            if predict is not None:
                for key, used in (("est_model_mask", anatomy), ("est_model_both", amap)):
                    if used is None:
                        continue
                    f = summarize_case(case.case_id, mask, case.geometry, lesion_table(mask, case.geometry, used), used).anatomy
                    grades[key].append((f["fazekas_periventricular"], f["fazekas_deep"]))
                    line += f" {key[4:].replace('_', ' ')} {grades[key][-1][0]}/{grades[key][-1][1]}"
        print(line, flush=True)
    report("truth mask:", grades["truth"], grades["est_truth_mask"])
    if predict is not None:
        report("model mask, truth anatomy:", grades["truth"], grades["est_model_mask"])
        if grades["est_model_both"]:
            report("model mask, model anatomy:", grades["truth"], grades["est_model_both"])
    for disease, counts in locations.items():
        total = sum(counts.values())
        if total:
            print(f"{disease} location classes ({total} lesions): " + ", ".join(f"{k} {counts[k]} ({counts[k] / total:.0%})" for k in LOCATIONS))
    location_report(pairs)
    ten_mm_report(volumes)
    if regions["MS"]:
        print("MS cases by number of McDonald brain DIS regions with a lesion >= 3 mm: " + ", ".join(f"{k}: {v}" for k, v in sorted(regions["MS"].items())))
    print(f"lesion table + summary with the anatomy map (truth mask): median {np.median(seconds):.3f} s, max {np.max(seconds):.3f} s per case")


if __name__ == "__main__":
    main()
