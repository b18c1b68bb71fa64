"""How often a model finds a plain lesion on a head unlike its training scans: the longitudinal tests' phantom.

The phantom (tests/test_longitudinal.py, `phantom_head`: a smooth textured ellipsoid brain, two ventricles, a bright
nucleus, a bright 6 mm rim for the scalp) is nothing like the synthetic or real brains a model learnt from, so it
asks whether a model still calls a lesion that stands out plainly from what surrounds it. Its own three lesions are
taken out; a round lesion (--diameter, +50 over the brain's 100) is put in turn at every point of a grid through its
white matter (--spacing apart, away from the edge, the ventricles and the nucleus; interleaved over eight scans so
that lesions stay two grid steps apart), the head is cut into thick slabs (--thickness) and each model predicts the
slabs as `deepwml_predict` would up to the probabilities (the plan's preprocessing, the network, no TTA). Per model:
the share of lesions whose most probable voxel reaches 0.5, the median of those maxima, and the false lesions
(probability >= 0.5 connected across slices, touching no lesion).

The tests' fixture lesions were first placed where one shipped model found them; this sweep places them everywhere,
so a model is not judged by a few positions that suit one network (the fixture's new lesion now lies at a grid point
every shipped model found on every seed: --csv).

    python benchmarks/phantom_sweep.py -m builtin [PLAN_FOLDER ...] [--checkpoint latest] [--seeds 0 1 2]
        [--thickness 5] [--diameter 10] [--spacing 18] [--csv lesions.csv]
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

#: brightness a lesion adds over the phantom's brain (100; its rim 160), as in the tests
LESION_CONTRAST = 50.0


def _world_grids(shape: Sequence[int]) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The phantom's z, y, x world coordinates in mm (phantom_head's grid)."""
    return tuple(np.meshgrid(*[(np.arange(n) - n / 2) * 1.5 for n in shape], indexing="ij"))  # type: ignore[return-value]


def white_matter_points(shape: Sequence[int], spacing: float, radius: float) -> np.ndarray:
    """Grid points (x, y, z mm) inside the phantom's brain, a lesion's radius + 6 mm from its edge, the ventricles and
    the bright nucleus (the ellipsoids of phantom_head, grown by that margin)."""
    margin = radius + 6.0
    pts = np.stack(np.meshgrid(*[np.arange(-72.0, 73.0, spacing)] * 3, indexing="ij"), -1).reshape(-1, 3)
    x, y, z = pts.T

    def inside(cx, cy, cz, ax, ay, az, grow):
        return ((x - cx) / (ax + grow)) ** 2 + ((y - cy) / (ay + grow)) ** 2 + ((z - cz) / (az + grow)) ** 2 < 1

    keep = inside(0, 0, -5, 62, 74, 56, -margin)
    for ellipsoid in ((-9, -8, 8, 6, 25, 14), (10, -4, 5, 5, 20, 12), (-25, 20, -20, 8, 10, 9)):
        keep &= ~inside(*ellipsoid, margin)
    return pts[keep]


def sweep_scans(seed: int, spacing: float, diameter: float):
    """(image, lesion ids, geometry, centres) scans of the phantom of ``seed`` without its own lesions, the grid's
    points shared out over eight scans by the parity of their grid indices, so that lesions of one scan lie two grid
    steps apart; ``centres[k - 1]`` is lesion k's centre (x, y, z mm in phantom_head's frame)."""
    from test_longitudinal import phantom_head

    image, own, geometry = phantom_head(seed)
    image = image - LESION_CONTRAST * own
    z, y, x = _world_grids(image.shape)
    points = white_matter_points(image.shape, spacing, diameter / 2)
    parity = (np.round(points / spacing).astype(int) % 2) @ np.array([1, 2, 4])
    for g in range(8):
        label = np.zeros(image.shape, np.uint8)
        centres = points[parity == g]
        for k, (px, py, pz) in enumerate(centres, start=1):
            label[(x - px) ** 2 + (y - py) ** 2 + (z - pz) ** 2 < (diameter / 2) ** 2] = k
        if label.any():
            yield image + LESION_CONTRAST * (label > 0), label, geometry, centres


def _probabilities(net, plan, image: np.ndarray, geometry) -> np.ndarray:
    """The network's probabilities on the preprocessed slices of a stack, back on the stack's own grid."""
    import torch

    from deepwml.imageio import Image
    from deepwml.preprocessing.transforms import preprocess_arrays, revert_to_original

    pp = preprocess_arrays(Image(image.astype(np.float32), geometry), plan)
    x = torch.from_numpy(np.ascontiguousarray(pp.image[0], dtype=np.float32))[:, None]
    with torch.no_grad():
        probs = torch.sigmoid(torch.cat([net(b) for b in x.split(8)])).numpy()[:, 0]
    return revert_to_original(probs, pp.props)


def cut_scan(image: np.ndarray, label: np.ndarray, geometry, thickness: float) -> Tuple[object, np.ndarray]:
    """The scan cut into slabs, and each lesion's id where the slabs label it (a pixel is lesion when >= 40 % of its
    slab is, each lesion on its own); the same for every model, so made once per scan."""
    from deepwml.synthetic.thick_slices import SlabSpec, thick_slice_stack

    stack = thick_slice_stack(image, (label > 0).astype(np.uint8), geometry, SlabSpec(thickness))
    truth = np.zeros(stack.image.shape, np.int32)
    for k in np.unique(label)[1:]:
        truth[thick_slice_stack(image, (label == k).astype(np.uint8), geometry, SlabSpec(thickness)).label > 0] = k
    return stack, truth


def score_scan(net, plan, stack, truth: np.ndarray) -> Tuple[Dict[int, float], int]:
    """Most probable voxel of each lesion of ``truth`` (ids of :func:`cut_scan`; lesions no slab labels are left out)
    and the false lesions."""
    from scipy import ndimage

    probs = _probabilities(net, plan, stack.image, stack.geometry)
    maxima = {int(k): float(probs[truth == k].max()) for k in np.unique(truth)[1:]}
    found, n = ndimage.label(probs >= 0.5)
    touching = set(np.unique(found[truth > 0]).tolist()) - {0}
    return maxima, n - len(touching)


def _write_csv(rows: List[dict], path: Path) -> None:
    """``rows`` as a CSV at ``path``, written to a temporary file first (deepwml.utils.atomic)."""
    import pandas as pd

    from deepwml.utils.atomic import write_text

    write_text(path, pd.DataFrame(rows).to_csv(index=False))


def _main(argv: Optional[List[str]]) -> int:
    """Sweep a lesion through the phantom's white matter and print, per model, how often it is found."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-m", "--models", nargs="+", default=["builtin"], help="'builtin' or PLAN folders")
    p.add_argument("--checkpoint", choices=("best", "latest"), default="latest")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="the phantom's texture seeds")
    p.add_argument("--thickness", type=float, default=5.0, help="slab thickness, mm")
    p.add_argument("--diameter", type=float, default=10.0, help="lesion diameter, mm")
    p.add_argument("--spacing", type=float, default=18.0, help="grid step between lesion centres, mm")
    p.add_argument("--csv", type=Path, default=None,
                   help="write every lesion's centre and most probable voxel per model here (e.g. to place a test's "
                        "lesion where every model finds one)")
    args = p.parse_args(argv)
    import torch

    from deepwml.inference.model_loading import build_fold_networks, check_model, load_fold_states
    from deepwml.pretrained import builtin_model_dir

    torch.set_num_threads(2)
    models: Dict[str, Tuple[object, object]] = {}
    for m in args.models:
        spec = check_model(builtin_model_dir() if m == "builtin" else Path(m), checkpoint=args.checkpoint)
        models[m] = (build_fold_networks(spec, load_fold_states(spec))[0].eval(), spec.plan)
    maxima: Dict[str, List[float]] = {m: [] for m in models}
    false: Dict[str, int] = {m: 0 for m in models}
    rows = []
    scans = 0
    for seed in args.seeds:
        for image, label, geometry, centres in sweep_scans(seed, args.spacing, args.diameter):
            scans += 1
            stack, truth = cut_scan(image, label, geometry, args.thickness)
            for m, (net, plan) in models.items():
                found, wrong = score_scan(net, plan, stack, truth)
                maxima[m] += found.values()
                false[m] += wrong
                rows += [{"model": m, "seed": seed, "x_mm": centres[k - 1][0], "y_mm": centres[k - 1][1],
                          "z_mm": centres[k - 1][2], "max_probability": v} for k, v in found.items()]
    if args.csv is not None:
        _write_csv(rows, args.csv)
    print(f"phantom sweep: {len(next(iter(maxima.values())))} lesions of {args.diameter:g} mm on {scans} scans "
          f"(seeds {', '.join(map(str, args.seeds))}), {args.thickness:g} mm slabs, no TTA")
    for m, values in maxima.items():
        hit = sum(v >= 0.5 for v in values)
        print(f"  {m}: found {hit}/{len(values)} ({hit / max(len(values), 1):.0%}), median most probable voxel "
              f"{statistics.median(values):.3f}, false lesions {false[m]}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point: a model that cannot be read is one line naming it, exit 2."""
    from deepwml.cli.common import run

    return run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
