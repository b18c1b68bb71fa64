"""What each DICOM output costs per case: the SEG (--dicom-seg; with and without a segment per lesion location), the
measurement SR (--dicom-sr, alone and referencing the SEG) and the findings picture (--dicom-findings).

Writes, under --work (outside the repository), synthetic MS#1 cases (512x512, cut to 25 slices) as DICOM series and
takes each case's reference lesion mask as the prediction and its truth anatomy as the anatomy map (the outputs' cost
follows the lesions, not the networks), so the SR, the findings picture and the location SEG carry the lesion
locations as deepwml_predict writes them by default.
Prints, per case, the number of lesions and the fastest of --runs writes of each output, then the median over cases.
With --speckled, one more row: the first case's series under a mask of thousands of specks (what a model far outside
its training data returns), where the SR itemises only the largest lesions that fit its bounds.

    python benchmarks/dicom_outputs.py --work /tmp/dicom_outputs [--cases 3] [--runs 3] [--speckled]
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np

from deepwml.anatomy.labels import anatomy_from_truth
from deepwml.imageio import Geometry, read_image
from deepwml.inference.dicom_capture import first_header, write_findings_capture
from deepwml.inference.dicom_seg import location_label_map, write_dicom_seg
from deepwml.inference.lesion_ids import lesion_ids_of
from deepwml.inference.qc import table_locations
from deepwml.inference.dicom_sr import write_dicom_sr
from deepwml.inference.lesion_report import lesion_table, summarize_case
from deepwml.synthetic.generate import generate_case

UID = "1.2.826.0.1.3680043.8.498.78."


def synthetic_stack(k: int, slices: int) -> Tuple[np.ndarray, Geometry, np.ndarray]:
    """Synthetic MS#1 case ``k`` cut to ``slices`` slices: int16 voxels as a scanner stores them, their geometry and
    the lesion mask."""
    return stack_with_anatomy(k, slices)[:3]


def stack_with_anatomy(k: int, slices: int) -> Tuple[np.ndarray, Geometry, np.ndarray, np.ndarray]:
    """:func:`synthetic_stack` and the case's truth anatomy map on the same slices."""
    case = generate_case("MS#1", k + 2, seed=0, truth=True)  # MS#1 case 1 is 256x256; the others 512x512
    pick = np.linspace(0, case.image.shape[0] - 1, slices).round().astype(int)
    g = case.geometry
    geometry = Geometry((g.size[0], g.size[1], slices), g.spacing, g.origin, g.direction)
    image = case.image[pick]
    scale = 1000.0 / max(float(np.percentile(image, 99.5)), 1e-6)
    anatomy = anatomy_from_truth({name: case.truth[name][pick] for name in ("brain", "ventricle", "cortex", "infratentorial")})
    return np.round(image * scale).astype(np.int16), geometry, (case.label[pick] > 0).astype(np.uint8), anatomy


def dicom_series_writer():
    """deepwml_testing's DICOM series writer (it sits at the repository root, not installed)."""
    root = str(Path(__file__).resolve().parents[1])
    if root not in sys.path:
        sys.path.insert(0, root)
    from deepwml_testing.dicom_series import write_dicom_series

    return write_dicom_series


def write_case(folder: Path, k: int, slices: int) -> Tuple[np.ndarray, np.ndarray]:
    """Synthetic MS#1 case ``k`` as a DICOM series in ``folder``; returns its lesion mask and anatomy map on the
    series' grid."""
    stored, geometry, mask, anatomy = stack_with_anatomy(k, slices)
    dicom_series_writer()(folder, stored, geometry, UID + str(k))
    return mask, anatomy


def fastest(fn: Callable[[], object], runs: int) -> float:
    """The fastest of ``runs`` calls, in seconds."""
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def time_case(folder: Path, mask: np.ndarray, anatomy: np.ndarray, out: Path, runs: int) -> Tuple[Dict[str, float], int]:
    """The fastest write of each DICOM output of one case, and its number of lesions."""
    image = read_image(folder)
    assert image.array.shape == mask.shape, (image.array.shape, mask.shape)
    table = lesion_table(mask, image.geometry, anatomy, probs=mask * np.float32(0.9))
    summary = summarize_case(folder.name, mask, image.geometry, table, anatomy)
    out.mkdir(parents=True, exist_ok=True)
    seg = out / f"{folder.name}_seg.dcm"
    axis = image.geometry.slice_axis_numpy
    locations = table_locations(table)
    ids = lesion_ids_of(mask, axis)  # deepwml_predict labels a case once for all its outputs

    def located_seg() -> None:
        """The SEG as deepwml_predict writes it with an anatomy map: the location split included."""
        labels, classes = location_label_map(ids, locations)
        write_dicom_seg(labels, folder, seg, "bench", locations=classes)

    times = {
        "SEG": fastest(lambda: write_dicom_seg(mask, folder, out / "plain_seg.dcm", "bench"), runs),
        "SEG by location": fastest(located_seg, runs),
        "SR": fastest(lambda: write_dicom_sr(mask, table, summary, folder, out / "sr.dcm", "bench", None, axis), runs),
        "SR + SEG reference": fastest(lambda: write_dicom_sr(mask, table, summary, folder, out / "sr2.dcm", "bench", None,
                                                             axis, seg), runs),
        "findings picture": fastest(lambda: write_findings_capture(image.array, mask, image.geometry, summary,
                                                                   first_header(folder), out / "f.dcm", "bench",
                                                                   locations=locations), runs),
    }
    return times, len(table)


def speckled(mask: np.ndarray, seed: int = 0) -> np.ndarray:
    """``mask`` with about 3 % of all voxels set at random: thousands of one-voxel lesions around the real ones."""
    return (mask > 0) | (np.random.default_rng(seed).random(mask.shape) > 0.97)


def row(name: str, lesions: str, times: Dict[str, float]) -> str:
    """One printed row of the table."""
    return f"{name:>6}  {lesions:>7}  " + "  ".join(f"{seconds:>17.3f}s" for seconds in times.values())


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Time the DICOM outputs on synthetic DICOM cases and print the table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", required=True, type=Path, help="scratch folder (emptied)")
    p.add_argument("--cases", type=int, default=3)
    p.add_argument("--slices", type=int, default=25)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--speckled", action="store_true", help="also time a mask of thousands of specks")
    args = p.parse_args(argv)
    shutil.rmtree(args.work, ignore_errors=True)
    results: Dict[str, list] = {"SEG": [], "SEG by location": [], "SR": [], "SR + SEG reference": [], "findings picture": []}
    print("  case  lesions  " + "  ".join(f"{name:>18}" for name in results))
    masks = {}
    for k in range(args.cases):
        folder = args.work / f"case{k}"
        masks[k] = write_case(folder, k, args.slices)
        times, lesions = time_case(folder, *masks[k], args.work / "out", args.runs)
        for name, seconds in times.items():
            results[name].append(seconds)
        print(row(str(k), str(lesions), times))
    print(row("median", "", {name: statistics.median(v) for name, v in results.items()}))
    if args.speckled:
        times, lesions = time_case(args.work / "case0", speckled(masks[0][0]).astype(np.uint8), masks[0][1], args.work / "out",
                                   args.runs)
        print(row("specks", str(lesions), times))


if __name__ == "__main__":
    main()
