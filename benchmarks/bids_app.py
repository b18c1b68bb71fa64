"""What deepwml_bids adds to deepwml_predict: a BIDS dataset segmented into a derivatives dataset, against
deepwml_predict on the same FLAIR files in a plain folder, in the same run.

Writes, under --work (outside the repository; emptied), a BIDS dataset of --participants synthetic MS#1 patients,
each scanned in two sessions (the patient's case cut to --slices slices, and the same head re-sliced thicker), a
T1w beside each FLAIR. Each run, with the shipped model (anatomy on): (1) deepwml_predict's library run on the
FLAIR files copied into one folder, timed (after an untimed warm-up run); (2) deepwml_bids participant level into a fresh derivatives folder
(library call), timed; (3) the same again with --longitudinal on the finished folder (only the comparisons), timed;
(4) the group level, timed. Prints each run's times, then the medians over runs and the ratio (2)/(1).

    python benchmarks/bids_app.py --work /tmp/bids_bench [--participants 3] [--slices 24] [--runs 3]
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List

import numpy as np

from deepwml.bids.group import write_group_table
from deepwml.bids.participant import run_participant_level
from deepwml.imageio import Geometry, write_image
from deepwml.inference.run import PredictRequest, predict
from deepwml.synthetic.thick_slices import SlabSpec, thick_slice_stack

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script or imported: its sibling benchmarks
from dicom_outputs import synthetic_stack  # noqa: E402
from machine_load import load_line  # noqa: E402


def make_dataset(root: Path, participants: int, slices: int) -> List[Path]:
    """The BIDS dataset; returns its FLAIR files."""
    root.mkdir(parents=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "bench", "BIDSVersion": "1.9.0"}))
    flairs = []
    for k in range(participants):
        stored, geometry, mask = synthetic_stack(k, slices)
        # the second session: the same head in slabs half as thick again, as a follow-up on another protocol might be
        thicker = thick_slice_stack(stored.astype(np.float32), mask, geometry, SlabSpec(geometry.spacing[2] * 1.5))
        sessions = ((stored, geometry), (np.round(thicker.image).astype(np.int16), thicker.geometry))
        for s, (image, g) in enumerate(sessions, 1):
            anat = root / f"sub-{k + 1:02d}" / f"ses-{s}" / "anat"
            flairs.append(write_image(image, Geometry(g.size, g.spacing, g.origin, g.direction),
                                      anat / f"sub-{k + 1:02d}_ses-{s}_FLAIR.nii.gz"))
            write_image(image[:, ::-1].copy(), g, anat / f"sub-{k + 1:02d}_ses-{s}_T1w.nii.gz")
    return flairs


def one_run(work: Path, root: Path, flairs: List[Path]) -> Dict[str, float]:
    """The four timings of one run, in seconds."""
    plain = work / "plain"
    shutil.rmtree(plain, ignore_errors=True)
    (plain / "in").mkdir(parents=True)
    for f in flairs:
        shutil.copy2(f, plain / "in" / f.name)
    times = {}
    t = time.perf_counter()
    predict(PredictRequest(input=plain / "in", output=plain / "out"))
    times["deepwml_predict"] = time.perf_counter() - t
    out = work / "derivatives"
    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    run_participant_level(root, out, PredictRequest(input=root, output=out))
    times["participant"] = time.perf_counter() - t
    t = time.perf_counter()
    report = run_participant_level(root, out, PredictRequest(input=root, output=out), longitudinal="previous")
    times["longitudinal"] = time.perf_counter() - t
    assert all(c.status == "compared" for c in report.comparisons), report.comparisons
    t = time.perf_counter()
    write_group_table(out, root)
    times["group"] = time.perf_counter() - t
    return times


def main(argv=None) -> int:
    """Run the benchmark and print its figures."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, required=True, help="scratch folder outside the repository (emptied)")
    p.add_argument("--participants", type=int, default=3)
    p.add_argument("--slices", type=int, default=24)
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args(argv)
    repo = Path(__file__).resolve().parents[1]
    if args.work.resolve().is_relative_to(repo):
        p.error(f"--work must lie outside the repository ({repo})")
    shutil.rmtree(args.work, ignore_errors=True)
    root = args.work / "bids"
    flairs = make_dataset(root, args.participants, args.slices)
    # an untimed warm-up: the first prediction of a process also pays for imports and the model's first load
    one_run(args.work, root, flairs[:2])
    print(load_line())
    print(f"{len(flairs)} FLAIRs ({args.participants} participants x 2 sessions), shipped model, anatomy on")
    runs = []
    for r in range(args.runs):
        times = one_run(args.work, root, flairs)
        runs.append(times)
        print(f"run {r + 1}: " + ", ".join(f"{k} {v:.2f} s" for k, v in times.items()))
    medians = {k: statistics.median(t[k] for t in runs) for k in runs[0]}
    print("median: " + ", ".join(f"{k} {v:.2f} s" for k, v in medians.items()))
    print(f"participant level / deepwml_predict on the same files: {medians['participant'] / medians['deepwml_predict']:.2f}x; "
          f"--longitudinal adds {medians['longitudinal'] / args.participants:.2f} s per pair of sessions")
    return 0


if __name__ == "__main__":
    sys.exit(main())
