"""What reading a whole DICOM study costs against reading its FLAIR series alone.

Writes, under --work (outside the repository), one FLAIR series and a study holding it beside N other series of the
same size (one folder, as a PACS export lays them out), and the same study as one multi-frame FLAIR; then prints the
median time of deepwml's reader (series choice included) for each.

    python benchmarks/dicom_study.py --work /tmp/dicom_bench [--series 10] [--slices 25] [--matrix 512] [--runs 3]
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from deepwml.imageio import Geometry, read_image

UID = "1.2.826.0.1.3680043.8.498.77."


def write_series(folder: Path, array: np.ndarray, geometry: Geometry, uid: str, number: int, description: str,
                 te: float, ti: float = 0.0) -> None:
    """One classic MR series of the benchmark's study, a file per slice, with the tags the series choice reads."""
    root = str(Path(__file__).resolve().parents[1])
    if root not in sys.path:
        sys.path.insert(0, root)  # deepwml_testing sits at the repository root, not installed
    from deepwml_testing.dicom_series import write_dicom_series

    tags = {"0020|0011": str(number), "0018|0081": f"{te:g}", **({"0018|0082": f"{ti:g}"} if ti else {})}
    write_dicom_series(folder, array, geometry, uid, study_uid=UID + "1", prefix=f"s{number:02d}_", description=description,
                       extra_tags=tags)


def timed(folder: Path, runs: int) -> float:
    """Median seconds of read_image(folder) over ``runs`` runs (the first run warms the file cache, then counts)."""
    read_image(folder)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        read_image(folder)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None) -> int:
    """Write the folders and print the timings."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", required=True, type=Path, help="scratch folder (outside the repository; replaced)")
    p.add_argument("--series", type=int, default=10, help="series in the study besides the FLAIR")
    p.add_argument("--slices", type=int, default=25)
    p.add_argument("--matrix", type=int, default=512)
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args(argv)
    if Path(args.work).resolve().is_relative_to(Path(__file__).resolve().parents[1]):
        p.error("--work must lie outside the repository")
    shutil.rmtree(args.work, ignore_errors=True)
    rng = np.random.default_rng(0)
    array = rng.integers(0, 2000, (args.slices, args.matrix, args.matrix), dtype=np.int16)
    geometry = Geometry((args.matrix, args.matrix, args.slices), (0.45, 0.45, 6.0), (0.0, 0.0, 0.0))
    flair_only, study = args.work / "flair", args.work / "study"
    write_series(flair_only, array, geometry, UID + "10", 5, "AX T2 FLAIR", 120, 2400)
    write_series(study, array, geometry, UID + "10", 5, "AX T2 FLAIR", 120, 2400)
    for k in range(args.series):
        write_series(study, array, geometry, UID + f"{20 + k}", 10 + k, f"other series {k}", 12 + k)
    sys.stderr.flush()
    t_flair, t_study = timed(flair_only, args.runs), timed(study, args.runs)
    print(f"{args.slices} slices of {args.matrix}^2, median of {args.runs}: FLAIR series alone {t_flair:.2f} s; "
          f"study of {args.series + 1} series {t_study:.2f} s ({t_study / t_flair:.1f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
