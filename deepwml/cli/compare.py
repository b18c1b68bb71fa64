"""deepwml_compare: the lesion change between a baseline and a follow-up FLAIR of one patient."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

from deepwml.cli.common import add_device_argument, add_skull_strip_options, add_version_argument, run, run_installed
from deepwml.longitudinal.change import ChangeRules


def build_parser() -> argparse.ArgumentParser:
    """Arguments of deepwml_compare."""
    defaults = ChangeRules()
    p = argparse.ArgumentParser(
        prog="deepwml_compare",
        description=(
            "Compare two FLAIR scans of one patient: segment them (the shipped model unless -m; a scan given its mask is "
            "not segmented), "
            "align the baseline to the follow-up (rigid, 3D), and call each follow-up lesion new, enlarging, stable "
            "or shrinking and each baseline lesion persisting or resolved. Writes followup_lesions_change.csv, "
            "baseline_lesions_change.csv, change.nii.gz (on the follow-up's grid: 1 stable, 2 enlarging, 3 new, "
            "4 shrinking, 5 outside the baseline's slabs, 6 new but not counted), baseline_on_followup.nii.gz, "
            "baseline_mask_on_followup.nii.gz, change.png, change.html (a page for the reader) and change.json. "
            "Scans acquired alike (same slice thickness) compare best; see docs/prediction.md."
        ),
    )
    p.add_argument("-b", "--baseline", type=Path, required=True, help="the earlier scan: image file or DICOM series folder, or an archive (ZIP, tar) holding one")
    p.add_argument("-f", "--followup", type=Path, required=True, help="the later scan: image file or DICOM series folder, or an archive (ZIP, tar) holding one")
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder (the segmentations go to its "
                   "baseline/ and followup/ subfolders, as deepwml_predict writes them)")
    p.add_argument("-m", "--model", type=Path, help="the model that segments both scans: a trained model's PLAN folder "
                   "(default: the pretrained model shipped with DeepWML)")
    p.add_argument("--baseline-mask", type=Path, help="the baseline's lesion mask (> 0: lesion, e.g. a reader's corrected "
                   "one) instead of segmenting it; for a DICOM series also a DICOM SEG of it")
    p.add_argument("--followup-mask", type=Path, help="the follow-up's lesion mask instead of segmenting it (image file, or "
                   "a DICOM SEG of a DICOM series)")
    p.add_argument("--tolerance-mm", type=float, default=defaults.tolerance_mm,
                   help=f"in-plane distance within which a follow-up and a baseline lesion touch, mm (default "
                        f"{defaults.tolerance_mm:g}; never less than the coarser pixel)")
    p.add_argument("--enlarge-fraction", type=float, default=defaults.enlarge_fraction,
                   help=f"a lesion grown by at least this share of its baseline volume is enlarging (default "
                        f"{defaults.enlarge_fraction:g}: 50 %%)")
    p.add_argument("--enlarge-min-ml", type=float, default=defaults.enlarge_min_ml,
                   help=f"... and by at least this many ml (default {defaults.enlarge_min_ml:g})")
    p.add_argument("--new-min-long-axis-mm", type=float, default=defaults.new_min_long_axis_mm,
                   help=f"a new lesion counts from this long axis in mm (default {defaults.new_min_long_axis_mm:g}, "
                        f"MAGNIMS); smaller ones are listed, not counted")
    p.add_argument("--min-signal-change", type=float, default=defaults.min_signal_change,
                   help=f"a new lesion, and the part a lesion grew by, must be at least this much brighter than the "
                        f"aligned baseline was there, in units of each scan's median over the head (default "
                        f"{defaults.min_signal_change:g}; a very negative value turns the rule off)")
    p.add_argument("--no-picture", action="store_true", help="skip change.png")
    p.add_argument("--dicom-seg", action="store_true",
                   help="also write change_seg.dcm: the change map as a DICOM SEG of the follow-up series (a DICOM folder), "
                        "one segment per status, for a PACS or viewer (needs highdicom)")
    p.add_argument("--dicom-findings", action="store_true",
                   help="also write change_findings.dcm: the findings sentence above the change picture as a DICOM Secondary "
                        "Capture in the follow-up's study, for PACS viewers that show no SEG (follow-up a DICOM series "
                        "folder; needs highdicom)")
    p.add_argument("--dicom-sr", action="store_true",
                   help="also write change_sr.dcm: the change's figures (new, enlarging, resolved lesions, volumes at both "
                        "visits) and each follow-up lesion (outlines, status, volume) as a DICOM Structured Report "
                        "(TID 1500) in the follow-up's study (follow-up a DICOM series folder; needs highdicom)")
    add_skull_strip_options(p, "segment both scans on the brain the anatomy model finds, so that a scan with its skull and "
                            "one stripped (a change of protocol between the visits) are segmented alike: the default, as "
                            "in deepwml_predict; asked for, a scan in which it finds no brain fails",
                            "segment both scans as given, skull and scalp included (deepwml_predict --no-skull-strip)")
    p.add_argument("--overwrite", action="store_true",
                   help="segment both scans anew, and reuse an output folder that holds the comparison of other scans")
    add_device_argument(p)
    add_version_argument(p)
    return p


def _main(argv: Optional[List[str]]) -> int:
    args = build_parser().parse_args(argv)
    # torch comes with this: imported once the arguments are known, so that --help answers at once
    from deepwml.longitudinal.run import CompareRequest, compare

    rules = ChangeRules(args.tolerance_mm, args.enlarge_fraction, args.enlarge_min_ml, args.new_min_long_axis_mm,
                        args.min_signal_change)
    request = CompareRequest(args.baseline, args.followup, args.output, args.baseline_mask, args.followup_mask,
                             args.model, args.device, rules, write_picture=not args.no_picture, overwrite=args.overwrite,
                             dicom_seg=args.dicom_seg, dicom_findings=args.dicom_findings,
                             dicom_sr=args.dicom_sr, skull_strip=args.skull_strip)
    unmasked = [name for name, mask in (("baseline", args.baseline_mask), ("follow-up", args.followup_mask)) if mask is None]
    if unmasked and args.model is None:
        print(f"deepwml_compare: segmenting the {' and the '.join(unmasked)} with the pretrained model shipped with DeepWML",
              file=sys.stderr)
    report = compare(request)
    print(report.describe())
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point: user errors print one line and exit 2."""
    return run(_main, argv)


def entry() -> None:
    """The installed command: re-executed once with the tuned allocator (deepwml.utils.allocator), then main(), then
    exit without the interpreter's teardown (deepwml.cli.common)."""
    run_installed(main, tuned_allocator=True)


if __name__ == "__main__":
    entry()
