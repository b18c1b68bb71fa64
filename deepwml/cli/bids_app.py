"""deepwml_bids: a BIDS App. The T2-FLAIR scans of a BIDS dataset in, a BIDS-derivatives dataset of lesion masks out."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

from deepwml.bids import LONGITUDINAL_AGAINST
from deepwml.cli.common import add_device_argument, add_mask_options, add_version_argument, run, run_installed
from deepwml.utils.errors import DeepWMLError

EXIT_SCANS_FAILED = 1


def build_parser() -> argparse.ArgumentParser:
    """Arguments of deepwml_bids (the BIDS-Apps command line: bids_dir output_dir analysis_level)."""
    p = argparse.ArgumentParser(
        prog="deepwml_bids",
        description=(
            "Segment white-matter lesions in every T2-FLAIR (sub-*/[ses-*/]anat/*_FLAIR.nii[.gz]) of a BIDS dataset. "
            "participant: masks, lesion tables and QC pictures into a BIDS-derivatives dataset in output_dir "
            "(resumable: scans already predicted are not predicted again). group: output_dir/wmh_summary.tsv, one row "
            "per scan with the participants.tsv and sessions.tsv columns beside its lesion figures (and wmh_change.tsv, a "
            "row per comparison of consecutive sessions, after --longitudinal)."
        ),
    )
    p.add_argument("bids_dir", type=Path, help="the BIDS dataset (the folder holding dataset_description.json)")
    p.add_argument("output_dir", type=Path, help="the derivatives dataset to write, e.g. BIDS_DIR/derivatives/deepwml")
    p.add_argument("analysis_level", choices=("participant", "group"), help="participant: segment; group: the cohort table")
    p.add_argument("--participant-label", "--participant_label", nargs="+", default=None, metavar="LABEL",
                   help="only these participants (labels with or without 'sub-'; default: all), at either level")
    p.add_argument("--session-label", "--session_label", nargs="+", default=None, metavar="LABEL",
                   help="only these sessions (labels with or without 'ses-'; default: all)")
    group = p.add_argument_group("group level")
    group.add_argument("--group-by", default=None, metavar="COLUMN",
                       help="a participants.tsv (or sessions.tsv) column to show lesion volumes by in wmh_report.html")
    group.add_argument("--reference", type=Path, default=None, metavar="MASKS_DIR",
                       help="also score every published mask against a reader's mask of the same scan in this folder "
                       "(a derivatives dataset: the scan's entities and one of --mask-suffix), into wmh_agreement.tsv")
    group.add_argument("--ignore-label", type=int, default=None, metavar="V",
                       help="with --reference: a reader-mask value that is neither lesion nor not (2 in the WMH "
                       "challenge's masks, other pathology), left out of the scores")
    group.add_argument("--mask-suffix", nargs="+", default=None, metavar="ENDING",
                       help="the reader masks' endings after the scan's entities, tried in order (default: label-WMH_mask, "
                       "label-lesion_mask, desc-lesion_mask, label-lesion_roi and alike)")
    model = p.add_argument_group("participant level: model and options (as deepwml_predict)")
    model.add_argument("-m", "--model", default=None,
                       help="a trained model's PLAN folder, e.g. one made by deepwml_finetune (default: the shipped model)")
    model.add_argument("--checkpoint", choices=("best", "latest"), default="best", help="which checkpoint of each fold")
    add_device_argument(model)
    add_mask_options(model)
    model.add_argument("--save-probabilities", action="store_true", help="also write _label-WMH_probseg (lesion probability)")
    model.add_argument("--save-uncertainty", action="store_true", help="also write _desc-wmh_uncertainty (binary entropy, bits)")
    model.add_argument("--save-anatomy", action="store_true", help="also write _desc-anatomy_dseg (the anatomy label map)")
    model.add_argument("--save-lesion-ids", action="store_true",
                       help="also write _desc-lesionids_dseg (each lesion under its lesion_id of the lesion table) and its "
                       ".tsv look-up table naming each id (volume, location, confidence), for lesion-wise analyses")
    model.add_argument("--report", nargs="?", const="html", choices=("html", "pdf"), default=None,
                       help="also write each scan's patient page into sub-*/figures/ (pdf: printed with headless Chromium)")
    model.add_argument("--longitudinal", nargs="?", const="previous", choices=LONGITUDINAL_AGAINST, default=None,
                       help="also compare each participant's later sessions (ordered by the acq_time of sessions.tsv, else "
                       "the labels) with the session before (previous, the default), the first session (first) or both, as "
                       "deepwml_compare does: new, enlarging and resolved lesions, into sub-*/longitudinal/ (the group level "
                       "then also writes wmh_change.tsv)")
    model.add_argument("--overwrite", action="store_true", help="predict every selected scan anew")
    model.add_argument("-np", "--num-workers", type=int, default=None, help="scans predicted side by side (default: one per core)")
    model.add_argument("--no-bf16", action="store_true", help="compute in fp32")
    model.add_argument("--progress", action="store_true", help="show a progress bar even when stderr is not a terminal")
    add_version_argument(p)
    return p


def _participant(args: argparse.Namespace) -> int:
    # torch and SimpleITK take seconds to import: --help, argument errors and the group level do not wait for them
    from deepwml.bids.group import mixed_settings
    from deepwml.bids.participant import run_participant_level, selected_scans
    from deepwml.inference.run import PredictRequest

    request = PredictRequest(
        input=args.bids_dir, output=args.output_dir, model_dir=Path(args.model) if args.model else None,
        checkpoint=args.checkpoint, device=args.device, tta=args.tta, threshold=args.threshold,
        min_lesion_ml=args.min_lesion_ml, min_lesion_peak=args.min_lesion_peak, min_lesion_contrast=args.min_lesion_contrast,
        min_lesion_spread=args.min_lesion_spread,
        thin_slab_mm=args.thin_slab_mm, postprocessing=not args.no_postprocessing,
        white_matter_only=args.white_matter_only, keep_outside_brain=args.keep_outside_brain,
        min_cortex_contrast=args.min_cortex_contrast,
        skull_strip=args.skull_strip, anatomy=not args.no_anatomy, save_probabilities=args.save_probabilities, save_uncertainty=args.save_uncertainty,
        save_anatomy=args.save_anatomy, save_lesion_ids=args.save_lesion_ids, report=args.report, overwrite=args.overwrite, workers=args.num_workers,
        allow_bf16=not args.no_bf16, progress=args.progress or sys.stderr.isatty(),
    )
    scans = selected_scans(args.bids_dir, args.output_dir, args.participant_label, args.session_label)
    if args.model is None:
        print("deepwml_bids: using the pretrained model shipped with DeepWML (read its MODEL_CARD.md)", file=sys.stderr)
    report = run_participant_level(args.bids_dir, args.output_dir, request, scans=scans, longitudinal=args.longitudinal)
    print(report.describe())
    for c in report.comparisons:
        pair = f"sub-{c.followup.scan.subject} ses-{c.baseline.scan.session} -> ses-{c.followup.scan.session}"
        if c.status == "failed":
            print(f"deepwml_bids: {pair}: comparison failed: {c.findings}", file=sys.stderr)
        else:
            print(f"{pair}: {c.findings}")
    mixed = mixed_settings(args.output_dir)
    if mixed:
        print(f"deepwml_bids: warning: {args.output_dir} {mixed}", file=sys.stderr)
    for rel, warning in report.warnings.items():
        print(f"deepwml_bids: warning: {rel}: {warning}", file=sys.stderr)
    if report.failed:
        print(f"deepwml_bids: {len(report.failed)} scan(s) failed:", file=sys.stderr)
        for rel, error in report.failed.items():
            print(f"  {rel}: {error}", file=sys.stderr)
    if report.failed or any(c.status == "failed" for c in report.comparisons):
        return EXIT_SCANS_FAILED
    return 0


def _group(args: argparse.Namespace) -> int:
    from deepwml.bids.group import write_group_table
    from deepwml.bids.layout import check_bids_root

    check_bids_root(args.bids_dir)
    if args.reference is not None and not args.reference.is_dir():  # before any table is written
        raise DeepWMLError("reader masks folder not found", args.reference)
    if args.ignore_label is not None and (args.reference is None or not 2 <= args.ignore_label <= 255):
        raise DeepWMLError("--ignore-label needs --reference and a mask value from 2 to 255 (0 and 1 are background "
                           "and lesion)")
    for path in write_group_table(args.output_dir, args.bids_dir, args.participant_label, args.group_by):
        print(f"deepwml_bids: wrote {path}")
    if args.reference is not None:
        from deepwml.bids.agreement import TABLE_NAME, agreement_table, describe
        from deepwml.bids.layout import MASK_SUFFIXES
        from deepwml.bids.tables import write_tsv

        table, without = agreement_table(args.output_dir, args.bids_dir, args.reference, args.mask_suffix or MASK_SUFFIXES,
                                         args.participant_label, args.ignore_label)
        write_tsv(table, args.output_dir / TABLE_NAME)
        print(f"deepwml_bids: wrote {args.output_dir / TABLE_NAME}")
        print(describe(table, without))
    return 0


def _main(argv: Optional[List[str]]) -> int:
    args = build_parser().parse_args(argv)
    return _participant(args) if args.analysis_level == "participant" else _group(args)


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point."""
    return run(_main, argv)


def entry() -> None:
    """The installed command: re-executed once with the tuned allocator (deepwml.utils.allocator), then main(), then
    exit without the interpreter's teardown (deepwml.cli.common)."""
    run_installed(main, tuned_allocator=True)


if __name__ == "__main__":
    entry()
