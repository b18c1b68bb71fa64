"""deepwml_make_synthetic: a multi-centre synthetic 2D FLAIR dataset with lesion masks, in the raw format."""
from __future__ import annotations

import argparse
import time
from typing import List, Optional

from deepwml.cli.common import add_version_argument, run, run_installed
from deepwml.synthetic.centres import CENTRES


def build_parser() -> argparse.ArgumentParser:
    """Arguments of deepwml_make_synthetic."""
    p = argparse.ArgumentParser(
        prog="deepwml_make_synthetic",
        description="Synthesise thick-slice axial FLAIR scans of MS, NMOSD and CSVD patients from the twelve centres of "
        "Zhang, Duan et al. 2021 (Table 1), with lesion masks, as a raw dataset (imagesTr/labelsTr/imagesTs/labelsTs "
        "+ dataset.json). The same seed gives the same files; an interrupted run resumes when started again.",
    )
    out = p.add_mutually_exclusive_group()
    out.add_argument("-o", "--output", dest="raw_root", metavar="RAW_ROOT", help="raw data root to write into")
    out.add_argument("--raw", dest="raw_root", metavar="DIR", help="same as -o (default: $DEEPWML_RAW, else ~/deepwml_data/raw)")
    p.add_argument("--dataset-id", type=int, default=501, help="dataset number NNN of DatasetNNN_Name (default: 501)")
    p.add_argument("--name", default="Synth", help="dataset name (default: Synth)")
    p.add_argument("--scale", type=float, default=1.0,
                   help="fraction of the paper's patients per centre (492 in all at 1.0); at least one per centre (default: 1.0)")
    p.add_argument("--centres", default=None, help=f"comma-separated subset of: {','.join(CENTRES)} (default: all)")
    p.add_argument("--diseases", default=None, help="comma-separated subset of: MS,NMOSD,CSVD (default: all)")
    p.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same files (default: 0)")
    p.add_argument("--test-fraction", type=float, default=0.2,
                   help="share of each centre's patients put in imagesTs/labelsTs (default: 0.2)")
    p.add_argument("--skull-stripped", default="auto", metavar="{auto,always,never,SHARE}",
                   help="skull-stripped scans (background 0 outside an imperfect brain mask): 'auto' about a quarter of the "
                   "cases, drawn per case; 'always' or 'never'; or a share of the cases drawn per case, e.g. 0.5 (a larger "
                   "share strips every case a smaller one strips, the cases otherwise the same) (default: auto)")
    p.add_argument("--anatomy", action="store_true",
                   help="write the anatomy label maps (0 background, 1 white matter, 2 ventricle, 3 cortex, 4 infratentorial) "
                   "as labelsTr/labelsTs instead of the lesion masks, for training an anatomy model (same images)")
    p.add_argument("--lesion-class", action="store_true",
                   help="with --anatomy: lesion voxels in the parenchyma as a sixth class (5 parenchymal_lesion), for a "
                   "lesion-aware anatomy model that does not take lesions for cortex")
    p.add_argument("-np", "--num-processes", type=int, default=1, metavar="N", help="cases generated in parallel (default: 1)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset of the same id and name")
    p.add_argument("--progress", action="store_true", help="show the progress bar even when stderr is not a terminal")
    add_version_argument(p)
    return p


def _main(argv: Optional[List[str]]) -> int:
    """Parse the arguments and generate; user errors propagate to deepwml.cli.common.run."""
    from deepwml.synthetic import generate_dataset

    args = build_parser().parse_args(argv)
    start = time.monotonic()
    folder = generate_dataset(
        args.raw_root,
        dataset_id=args.dataset_id,
        name=args.name,
        scale=args.scale,
        centres=args.centres,
        diseases=args.diseases,
        seed=args.seed,
        test_fraction=args.test_fraction,
        n_jobs=max(1, args.num_processes),
        overwrite=args.overwrite,
        progress=True if args.progress else None,
        skull_stripped=args.skull_stripped,
        anatomy=args.anatomy,
        lesion_class=args.lesion_class,
    )
    from deepwml.datasets import DatasetJson

    meta = DatasetJson.load(folder / "dataset.json")
    print(f"{folder}: {meta.num_training} training and {meta.num_test} test cases ({time.monotonic() - start:.1f} s)")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point."""
    return run(_main, argv)


def entry() -> None:
    """The installed command (and ``python -m``): main(), then exit without the interpreter's teardown
    (deepwml.cli.common.run_installed)."""
    run_installed(main)


if __name__ == "__main__":
    entry()
