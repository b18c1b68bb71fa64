"""How close deepwml_predict's brain and ventricle volumes (summary.csv, from the shipped anatomy model) come to the
synthetic generator's drawn anatomy, and whether the brain's coverage of the scan is called the same.

Synthetic patients of every centre (a third skull-stripped) are drawn with their truth masks, predicted by
deepwml_predict with the shipped models (or --model / --anatomy-model), and summary.csv's `brain_volume_ml`,
`ventricle_volume_ml` and `brain_coverage` are compared with the same figures of the truth anatomy map.

With --real-dev the three real MS brains of ../shared/real_dev (benchmarks/real_dev.py's development scans) are made
into 5, 6.5 and 8 mm stacks as that script makes them and predicted alike: they have no anatomy truth, so it prints
each brain's volumes at each thickness and how far apart they are (the same brain should measure the same).

    python benchmarks/tissue_volumes.py [--per-centre 1] [--seed 4321] [--centres MS#3 ...] [--work DIR]
    python benchmarks/tissue_volumes.py --real-dev [--work DIR]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from machine_load import load_line  # benchmarks/machine_load.py, next to this script


def truth_figures(work: Path, per_centre: int, seed: int, centres: Sequence[str] = ()) -> Dict[str, Dict[str, object]]:
    """Write the scans of ``centres`` (default: every one) below ``work``/images; per case id its truth brain and
    ventricle volumes (ml) and coverage."""
    from deepwml.anatomy.labels import VENTRICLE, anatomy_from_truth, brain_mask
    from deepwml.anatomy.volumes import brain_coverage
    from deepwml.imageio import write_image
    from deepwml.synthetic.centres import CENTRES
    from deepwml.synthetic.generate import generate_case

    figures = {}
    for c, centre in enumerate(sorted(CENTRES)):
        if centres and centre not in centres:
            continue
        for index in range(1, per_centre + 1):
            case_id = f"{centre.replace('#', '')}_{index:03d}"
            case = generate_case(centre, index=index, seed=seed, skull_stripped=(c + index) % 3 == 0, truth=True)
            path = work / "images" / f"{case_id}.nii.gz"
            if not path.is_file():
                write_image(case.image, case.geometry, path)
            anatomy, voxel_ml = anatomy_from_truth(case.truth), case.geometry.voxel_volume_ml
            figures[case_id] = {"brain": np.count_nonzero(brain_mask(anatomy)) * voxel_ml,
                                "ventricle": np.count_nonzero(anatomy == VENTRICLE) * voxel_ml,
                                "coverage": brain_coverage(anatomy, case.geometry)}
    return figures


def real_dev(work: Path, command: List[str]) -> int:
    """The real development brains in 5, 6.5 and 8 mm stacks: each brain's volumes per thickness and their spread."""
    import pandas as pd

    import real_dev as rd  # benchmarks/real_dev.py, next to this script
    from deepwml.cli.predict import main as predict
    from deepwml.synthetic.thick_slices import SlabSpec

    thicknesses = (5.0, 6.5, 8.0)
    cases = rd.make_stacks(rd.find_scans(rd.DEFAULT_DATA), {t: SlabSpec(t, 0.0, None) for t in thicknesses},
                           work / "real_dev")
    if predict(["-i", str(work / "real_dev"), "-o", str(work / "real_dev_predicted"), "--no-qc", *command]) != 0:
        sys.exit("deepwml_predict failed")
    rows = pd.read_csv(work / "real_dev_predicted" / "summary.csv").set_index("case_id")
    print(f"{len(cases)} stacks of the real development brains: brain parenchyma ml, lateral ventricles ml, coverage "
          "per thickness (5 / 6.5 / 8 mm), and the spread (largest - smallest) / median")
    for scan in sorted({c.scan_id for c in cases}):
        ids = [rd.stack_id(scan, t) for t in thicknesses]
        parts = []
        for column, digits in (("brain_volume_ml", 0), ("ventricle_volume_ml", 1)):
            values = rows.loc[ids, column].to_numpy(float)
            spread = (values.max() - values.min()) / np.median(values)
            parts.append(" / ".join(f"{v:.{digits}f}" for v in values) + f" (spread {100 * spread:.1f} %)")
        print(f"  {scan}: brain {parts[0]}; ventricles {parts[1]}; {' / '.join(rows.loc[ids, 'brain_coverage'])}")
    return 0


def _errors(pairs: List[tuple]) -> str:
    """Median and largest absolute percentage error and Pearson r of (truth, predicted) pairs."""
    truth, got = np.array(pairs, float).T
    error = 100 * np.abs(got - truth) / truth
    r = float(np.corrcoef(truth, got)[0, 1]) if len(pairs) > 2 else float("nan")
    return f"median |error| {statistics.median(error):.1f} % (largest {error.max():.1f} %), r = {r:.3f}"


def main(argv: Optional[List[str]] = None) -> int:
    """Draw, predict, compare, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-centre", type=int, default=1, help="patients per synthetic centre (12 centres)")
    parser.add_argument("--centres", nargs="+", default=(), help="only these synthetic centres, e.g. MS#3 (default: all)")
    parser.add_argument("--seed", type=int, default=4321, help="generator seed (the shipped models trained on 0-2)")
    parser.add_argument("--model", default=None, help="lesion model PLAN folder (default: the shipped one)")
    parser.add_argument("--anatomy-model", default=None, help="anatomy model PLAN folder (default: the shipped one)")
    parser.add_argument("--work", type=Path, default=None, help="keep the scans and predictions here")
    parser.add_argument("--real-dev", action="store_true", help="the real development brains instead (no truth: "
                        "each brain's volumes across slice thicknesses)")
    args = parser.parse_args(argv)
    import pandas as pd

    from deepwml.cli.predict import main as predict

    print(load_line())
    models = ["-m", args.model] if args.model else []
    models += ["--anatomy-model", args.anatomy_model] if args.anatomy_model else []
    with tempfile.TemporaryDirectory() as scratch:
        work = (args.work or Path(scratch)).resolve()
        if args.real_dev:
            return real_dev(work, models)
        truth = truth_figures(work, args.per_centre, args.seed, args.centres)
        if predict(["-i", str(work / "images"), "-o", str(work / "predicted"), "--no-qc", *models]) != 0:
            sys.exit("deepwml_predict failed")
        rows = pd.read_csv(work / "predicted" / "summary.csv").set_index("case_id")
    print(f"{len(truth)} synthetic patients, seed {args.seed}: case, brain ml truth / predicted, ventricles ml truth / "
          "predicted, coverage truth / predicted")
    for case_id, t in truth.items():
        row = rows.loc[case_id]
        print(f"  {case_id}: {t['brain']:.0f} / {row['brain_volume_ml']:.0f}, {t['ventricle']:.1f} / "
              f"{row['ventricle_volume_ml']:.1f}, {t['coverage']} / {row['brain_coverage']}")
    print("brain parenchyma: " + _errors([(t["brain"], rows.loc[c, "brain_volume_ml"]) for c, t in truth.items()]))
    print("lateral ventricles: " + _errors([(t["ventricle"], rows.loc[c, "ventricle_volume_ml"]) for c, t in truth.items()]))
    same = sum(t["coverage"] == rows.loc[c, "brain_coverage"] for c, t in truth.items())
    print(f"coverage called as the truth's: {same} of {len(truth)} "
          f"({sum(t['coverage'] != 'complete' for t in truth.values())} truly cut)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
