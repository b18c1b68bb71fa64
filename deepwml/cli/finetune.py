"""deepwml_finetune: fine-tune a model (the shipped one by default) on a site's labelled scans, in one command."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import List, Optional

from deepwml.cli.common import add_device_argument, run


def build_parser() -> argparse.ArgumentParser:
    """Arguments of deepwml_finetune."""
    p = argparse.ArgumentParser(
        prog="deepwml_finetune",
        description=(
            "Fine-tune a model on your labelled scans: MANIFEST is a CSV of image (file, DICOM series or study folder), "
            "label (mask file or DICOM SEG) and optional centre, disease, ... (docs/dataset_format.md). Its labelled rows "
            "become a raw dataset, planned with the starting model's plan, trained on every scan from its weights, and "
            "installed in -o as a model folder with a model card; then deepwml_predict -i SCANS -o OUT -m THAT_FOLDER. "
            "The work folder resumes an interrupted run."
        ),
    )
    p.add_argument("manifest", type=Path, help="the CSV manifest of labelled scans")
    p.add_argument("-o", "--output", type=Path, required=True, help="the model folder to create")
    p.add_argument("--from", dest="start", default="builtin",
                   help="the model to start from: 'builtin' (the shipped model, default) or a trained model's PLAN folder")
    p.add_argument("--work", type=Path, help="data, caches and training (default: .NAME.work beside -o)")
    p.add_argument("--epochs", type=int, default=20, help="training epochs (default 20)")
    p.add_argument("--iterations", type=int, help="iterations per epoch (default: the plan's)")
    p.add_argument("--lr", type=float, help="learning rate (default: the fine-tuning default, 0.1 x the plan's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-np", "--num-processes", type=int, default=2, help="processes for conversion and preprocessing")
    p.add_argument("--overwrite", action="store_true", help="replace a model already in -o")
    add_device_argument(p)
    return p


def _main(argv: Optional[List[str]]) -> int:
    from deepwml.pretrained.site_finetune import FinetuneRequest, run_finetune

    args = build_parser().parse_args(argv)
    if args.epochs < 1 or (args.iterations is not None and args.iterations < 1):
        build_parser().error("--epochs and --iterations must be at least 1")
    run_finetune(FinetuneRequest(manifest=args.manifest, output=args.output, start=args.start, work=args.work,
                                 epochs=args.epochs, iterations=args.iterations, lr=args.lr, device=args.device,
                                 n_jobs=args.num_processes, seed=args.seed, overwrite=args.overwrite))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point."""
    return run(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
