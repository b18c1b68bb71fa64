"""deepwml_finetune: fine-tune a model (the shipped one by default) on a site's labelled scans, in one command."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Dict, List, Optional

from deepwml.cli.common import add_device_argument, add_version_argument, run, run_installed


def build_parser() -> argparse.ArgumentParser:
    """Arguments of deepwml_finetune."""
    p = argparse.ArgumentParser(
        prog="deepwml_finetune",
        description=(
            "Fine-tune a model on your labelled scans: MANIFEST is a CSV of image (file, DICOM series or study folder), "
            "label (mask file or DICOM SEG) and optional centre, disease, ... (docs/dataset_format.md). Its labelled rows "
            "become a raw dataset, planned with the starting model's plan, trained on every scan from its weights (or "
            "cross-validated in K folds with --folds K), and "
            "installed in -o as a model folder with a model card; then deepwml_predict -i SCANS -o OUT -m THAT_FOLDER. "
            "The work folder resumes an interrupted run."
        ),
    )
    p.add_argument("manifest", type=Path, help="the CSV manifest of labelled scans, a BIDS dataset (with --masks), or a "
                   "folder of scans (with --masks: a folder of their masks named by case id, as deepwml_predict "
                   "--lesion-masks reads a reader's corrected masks)")
    p.add_argument("-o", "--output", type=Path, required=True, help="the model folder to create")
    p.add_argument("--from", dest="start", default="builtin",
                   help="the model to start from: 'builtin' (the shipped model, default) or a trained model's PLAN folder")
    p.add_argument("--work", type=Path, help="data, caches and training (default: .NAME.work beside -o)")
    p.add_argument("--epochs", type=int, default=20, help="training epochs (default 20)")
    p.add_argument("--iterations", type=int, help="iterations per epoch (default: the plan's)")
    p.add_argument("--lr", type=float, help="learning rate (default: the fine-tuning default, 0.1 x the plan's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-np", "--num-processes", type=int, default=2, help="processes for conversion and preprocessing")
    p.add_argument("--holdout", type=int, default=0, metavar="N",
                   help="keep N labelled scans aside (drawn with --seed; not trained on) and score the fine-tuned model and "
                   "the model it started from on them: the figures go into the model card (default 0)")
    p.add_argument("--folds", type=int, default=0, metavar="K",
                   help="cross-validate: split the scans trained on into K folds (K >= 2), fine-tune one network per fold "
                   "on the others, segment every scan with the network that never trained on it, and put both models' "
                   "mean Dice and lesion F1 over all of them in the model card; the threshold and lesion filters are then "
                   "chosen on those predictions (deepwml_find_postprocessing) and the K networks installed as one model "
                   "whose probabilities are averaged (K networks per slice; --ship all: one). Default 0: one network trained on every "
                   "scan")
    p.add_argument("--ship", choices=("folds", "all"), default="folds",
                   help="with --folds: install the K fold networks, averaged (default), or 'all': one more network "
                   "fine-tuned on every scan with the same schedule and the threshold and filters chosen out of fold, "
                   "which predicts in one network's time (the card's figures are then the fold networks', an estimate "
                   "for it)")
    p.add_argument("--lesion-id-masks", action="store_true",
                   help="the masks are lesion-id maps (deepwml_predict --save-lesion-ids, corrected in a viewer: false "
                   "lesions cleared, missed ones painted with any label): every value above 0 is lesion")
    p.add_argument("--ignore-label", type=int, default=None, metavar="V",
                   help="mask value that is neither lesion nor not (2 in the MICCAI-2017 WMH challenge's masks, 'other "
                   "pathology'): left out of training and of the scores on --holdout scans; without it a mask holds "
                   "only 0 and 1")
    p.add_argument("--overwrite", action="store_true", help="replace a model already in -o")
    add_device_argument(p)
    bids = p.add_argument_group("a BIDS dataset or a folder of scans instead of a manifest (docs/dataset_format.md, "
                                "'BIDS datasets')")
    bids.add_argument("--masks", type=Path, default=None,
                      help="the folder holding the reader's lesion masks: in the BIDS layout (a derivatives dataset) for "
                      "a BIDS dataset; CASE<ending>, CASE.seg.nrrd or CASE.dcm (a DICOM SEG) for a folder of scans")
    bids.add_argument("--mask-suffix", nargs="+", default=None, metavar="ENDING",
                      help="the masks' endings after the scan's entities, tried in order (default: label-WMH_mask, "
                      "label-lesion_mask, desc-lesion_mask, label-lesion_roi and alike)")
    bids.add_argument("--participant-label", nargs="+", default=None, metavar="LABEL", help="only these participants")
    bids.add_argument("--session-label", nargs="+", default=None, metavar="LABEL", help="only these sessions")
    add_version_argument(p)
    return p


def folder_manifest(args: argparse.Namespace) -> Path:
    """The manifest of a BIDS dataset's FLAIRs and masks, or of a folder of scans and a folder of their masks named by
    case id, written beside the work folder (the same content on a second run, so the run resumes)."""
    from deepwml.bids.layout import MASK_SUFFIXES, DESCRIPTION_NAME
    from deepwml.bids.manifest import BidsSelection, manifest_rows, write_manifest
    from deepwml.pretrained.site_finetune import FinetuneRequest, work_folder
    from deepwml.utils.errors import DeepWMLError

    bids = (args.manifest / DESCRIPTION_NAME).is_file()
    if args.masks is None:
        raise DeepWMLError(f"a {'BIDS dataset' if bids else 'folder of scans'} needs --masks: the folder holding the "
                           "reader's lesion masks (or give a CSV manifest)", args.manifest)
    if bids:
        rows = manifest_rows(args.manifest, BidsSelection(args.participant_label, args.session_label, args.masks,
                                                          args.mask_suffix or MASK_SUFFIXES))
    else:
        not_bids = [flag for flag, value in (("--mask-suffix", args.mask_suffix), ("--participant-label",
                    args.participant_label), ("--session-label", args.session_label)) if value]
        if not_bids:
            raise DeepWMLError(f"is not a BIDS dataset (no {DESCRIPTION_NAME}): {', '.join(not_bids)} apply to BIDS "
                               "datasets only", args.manifest)
        rows = scan_folder_rows(args.manifest, args.masks, args.output)
    work = work_folder(FinetuneRequest(manifest=args.manifest, output=args.output, work=args.work))
    path = work.with_name(work.name + (".bids_manifest.csv" if bids else ".scans_manifest.csv"))
    write_manifest(rows, path)
    return path


def scan_folder_rows(scans: Path, masks: Path, output: Path) -> List[Dict[str, str]]:
    """Manifest rows of the scans in ``scans`` (files or DICOM series, as deepwml_predict -i finds them) that have a
    mask in ``masks`` named by case id (deepwml.inference.reviewed_masks); the others are named in a note."""
    import sys

    from deepwml.inference.inputs import discover_cases
    from deepwml.inference.reviewed_masks import find_reviewed_masks
    from deepwml.utils.errors import DeepWMLError

    cases = discover_cases(scans)
    found = find_reviewed_masks(masks, cases, output)
    if not found:
        raise DeepWMLError(f"holds no mask for any of the {len(cases)} scan(s) in {scans} (looked for CASE.nii.gz, "
                           "another image ending, CASE.seg.nrrd or CASE.dcm)", masks)
    unlabelled = [c.case_id for c in cases if c.case_id not in found]
    if unlabelled:
        print(f"[deepwml_finetune] note: {len(unlabelled)} scan(s) without a mask in {masks} left out: "
              f"{', '.join(unlabelled[:5])}{' ...' if len(unlabelled) > 5 else ''}", file=sys.stderr)
    return [{"case_id": c.case_id, "image": str(Path(c.source).resolve()), "label": str(found[c.case_id].resolve()),
             "centre": Path(scans).resolve().name, "disease": "other"} for c in cases if c.case_id in found]


def _main(argv: Optional[List[str]]) -> int:
    args = build_parser().parse_args(argv)
    # torch comes with these: imported once the arguments are known, so that --help answers at once
    from deepwml.pretrained.site_finetune import FinetuneRequest, run_finetune

    if args.epochs < 1 or (args.iterations is not None and args.iterations < 1):
        build_parser().error("--epochs and --iterations must be at least 1")
    if args.ignore_label is not None and not 2 <= args.ignore_label <= 254:
        build_parser().error("--ignore-label must be a mask value from 2 to 254 (0 and 1 are background and lesion)")
    if args.ignore_label is not None and args.lesion_id_masks:
        build_parser().error("--ignore-label and --lesion-id-masks do not go together: in a lesion-id map every value "
                             "above 0 is a lesion")
    bids_only = [flag for flag, value in (("--masks", args.masks), ("--mask-suffix", args.mask_suffix),
                                          ("--participant-label", args.participant_label),
                                          ("--session-label", args.session_label)) if value]
    if args.manifest.is_dir():
        args.manifest = folder_manifest(args)
    elif bids_only:
        build_parser().error(f"{', '.join(bids_only)}: only with a BIDS dataset, not a CSV manifest")
    run_finetune(FinetuneRequest(manifest=args.manifest, output=args.output, start=args.start, work=args.work,
                                 epochs=args.epochs, iterations=args.iterations, lr=args.lr, device=args.device,
                                 n_jobs=args.num_processes, seed=args.seed, overwrite=args.overwrite,
                                 holdout=args.holdout, lesion_id_masks=args.lesion_id_masks,
                                 ignore_label=args.ignore_label, folds=args.folds,
                                 ship=args.ship))
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
