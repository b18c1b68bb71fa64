"""Is a brain cut by the field of view called so, and a scan cropped tight to the head not? Each scan is predicted
whole (deepwml_predict with the shipped models, its anatomy map saved); then copies are written cropped in-plane to the
head's box (what is brighter than the air by Otsu's threshold, and the anatomy map's brain: a skull-stripped scan's
brain then touches every edge of the field, as in data cropped to it) and cut MM into the anatomy map's brain at each
side (back, front, left, right), and with the field's edge 3 mm outside the brain (through the skull, or air), and
predicted. Printed per kind of copy: how often summary.csv's brain_coverage names the cut side (for the box and the
edges outside the brain: is called as the whole scan), and the brain volume against the whole scan's
(deepwml.anatomy.volumes).

    python benchmarks/field_of_view.py --work /tmp/fov                       # 6 generator scans (seed 5000)
    python benchmarks/real_dev.py --stacks-only --work /tmp/rd               # real brains as 5 / 6.5 / 8 mm stacks
    python benchmarks/field_of_view.py --work /tmp/fov_rd -i /tmp/rd/images  # ... and the same for them
    python benchmarks/real_dev.py --site ms --stacks-only --work /tmp/ms     # ... in a synthetic head

The work folder resumes (copies and finished predictions are kept).
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
from skimage.filters import threshold_otsu

from deepwml.anatomy.labels import brain_mask
from deepwml.anatomy.volumes import COMPLETE, field_edges
from deepwml.cli import predict as predict_cli
from deepwml.cli.common import run
from deepwml.imageio import Geometry, Image, read_image, write_image
from deepwml.imageio.files import split_ending
from deepwml.utils.errors import DeepWMLError
from machine_load import load_line  # benchmarks/machine_load.py, next to this script
from skull_pairs import outside_repository
from stored_offsets import source_scans

#: the copy cropped to the head's box
BOX = "box"


def build_parser() -> argparse.ArgumentParser:
    """Arguments of the benchmark."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, required=True, help="work folder (outside the repository; resumes)")
    p.add_argument("-i", "--input", type=Path, help="folder of scans (default: 6 generator scans, seed --seed)")
    p.add_argument("--seed", type=int, default=5000, help="generator seed without -i (default 5000)")
    p.add_argument("--cuts", type=float, nargs="+", default=[-3.0, 4.0, 10.0],
                   help="mm into the brain; below 0, the field's edge that far outside it (default -3 4 10)")
    return p


def cropped(image: Image, box: Dict[int, Tuple[int, int]]) -> Image:
    """``image`` cropped to ``box`` (numpy axis -> [start, stop) of its indices), its origin moved with it."""
    index = [0, 0, 0]  # ITK (x, y, z) order
    slices = [slice(None)] * 3
    for axis, (start, stop) in box.items():
        index[2 - axis] = start
        slices[axis] = slice(start, stop)
    origin = image.geometry.index_to_world(np.asarray(index, float))
    array = np.ascontiguousarray(image.array[tuple(slices)])
    geometry = Geometry(array.shape[::-1], image.geometry.spacing, tuple(origin), image.geometry.direction)
    return Image(array, geometry)


def _extent(mask: np.ndarray, axis: int) -> Tuple[int, int]:
    """[start, stop) of the indices along numpy ``axis`` where ``mask`` holds anything."""
    present = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
    return int(present[0]), int(present[-1]) + 1


def write_copies(scan: Path, anatomy: Path, work: Path, cuts: Sequence[float]) -> Dict[str, Tuple[str, str]]:
    """The scan's copies in work/copies (kept when there): case id -> (kind of copy, the side it cuts or '')."""
    stem = split_ending(scan)[0]
    image, brain_map = read_image(scan), read_image(anatomy, dtype=None)
    brain = brain_mask(np.asarray(brain_map.array))
    if not brain.any():
        raise DeepWMLError("the anatomy model found no brain in it", scan)
    edges = field_edges(image.geometry)
    # the head: what is brighter than the air by Otsu's threshold (a stripped scan's brain), with the brain map's
    head = brain | (np.asarray(image.array) > threshold_otsu(np.asarray(image.array, np.float32)))
    extent, box = {}, {}
    for axis in {a for a, _ in edges}:
        extent[axis], box[axis] = _extent(brain, axis), _extent(head, axis)
    copies = {f"{stem}__{BOX}": (BOX, "", box)}
    for mm in cuts:
        for (axis, end), side in edges.items():
            step = int(round(mm / image.geometry.numpy_spacing[axis]))
            start, stop, size = *extent[axis], image.array.shape[axis]
            window = {axis: (max(0, start + step), size) if end == 0 else (0, min(size, stop - step))}
            # a field whose edge lies outside the brain (through the skull or air) must leave the coverage as it was
            kind, cut = (f"cut {mm:g} mm", side) if mm > 0 else (f"edge {-mm:g} mm outside the brain", "")
            copies[f"{stem}__{side.split()[-1]}{mm:g}"] = (kind, cut, window)
    out = {}
    for case_id, (kind, side, window) in copies.items():
        path = work / "copies" / f"{case_id}.nii.gz"
        if not path.is_file():
            copy = cropped(image, window)
            write_image(copy.array, copy.geometry, path)
        out[case_id] = (kind, side)
    return out


def summary_table(rows: pd.DataFrame, copies: Dict[str, Tuple[str, str]], whole: pd.DataFrame) -> List[str]:
    """Markdown lines: per kind of copy, how its coverage was called (as expected: a cut naming its side, the box and
    an edge outside the brain as the whole scan) and its brain volume against the whole scan's (``whole``: the whole
    scans' summary rows)."""
    kinds: Dict[str, List[Tuple[str, str]]] = {}
    for case_id, (kind, side) in copies.items():
        kinds.setdefault(kind, []).append((case_id, side))
    lines = ["| copy | scans | called as expected | coverage called | brain ml / the whole scan's: median (lowest) |",
             "|---|---|---|---|---|"]
    for kind, members in kinds.items():
        called = [str(rows.loc[c, "brain_coverage"]) for c, _ in members]
        scans = [c.rsplit("__", 1)[0] for c, _ in members]
        expected = [side in got if side else got == whole.loc[scan, "brain_coverage"]
                    for scan, (_, side), got in zip(scans, members, called)]
        ratios = [rows.loc[c, "brain_volume_ml"] / whole.loc[scan, "brain_volume_ml"] for scan, (c, _) in zip(scans, members)]
        counts = pd.Series(called).value_counts()
        lines.append(f"| {kind} | {len(members)} | {sum(expected)} | "
                     + ", ".join(f"{name} {n}" for name, n in counts.items())
                     + f" | {statistics.median(ratios):.3f} ({min(ratios):.3f}) |")
    return lines


def _predict(images: Path, out: Path, extra: Sequence[str] = ()) -> pd.DataFrame:
    """deepwml_predict's summary.csv rows of a folder (case_id index), failing loudly."""
    if predict_cli.main(["-i", str(images), "-o", str(out), "--no-qc", *extra]) != 0:
        raise DeepWMLError("deepwml_predict failed on some scans (above)", out)
    return pd.read_csv(out / "summary.csv", dtype={"case_id": str}).set_index("case_id")


def _main(argv: Optional[List[str]]) -> int:
    args = build_parser().parse_args(argv)
    if not args.cuts or 0 in args.cuts:
        raise DeepWMLError(f"--cuts takes mm into the brain (above 0) or outside it (below 0), not 0: {args.cuts}")
    work = outside_repository(args.work)
    print(load_line())
    scans = source_scans(work, args.input, args.seed)
    whole_dir = work / "whole"
    whole_dir.mkdir(parents=True, exist_ok=True)
    for scan in scans:  # one folder of links, so that the whole scans are predicted as one run
        link = whole_dir / scan.name
        if not link.exists():
            link.symlink_to(scan.resolve())
    whole = _predict(whole_dir, work / "whole_predicted", ["--save-anatomy"])
    not_complete = [c for c in whole.index if whole.loc[c, "brain_coverage"] != COMPLETE]
    copies = {}
    for scan in scans:
        stem = split_ending(scan)[0]
        copies.update(write_copies(scan, work / "whole_predicted" / f"{stem}_anatomy.nii.gz", work, args.cuts))
    rows = _predict(work / "copies", work / "copies_predicted")
    print(f"\n{len(scans)} scans; as given: " + ", ".join(
        f"{name} {n}" for name, n in whole["brain_coverage"].value_counts().items()))
    if not_complete:
        print("(a scan whose brain runs past it as given keeps that in its copies' coverage; the box is as expected "
              "when it is called as its whole scan: " + ", ".join(not_complete) + ")")
    print()
    print("\n".join(summary_table(rows, copies, whole)))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point."""
    return run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
