"""deepwml_predict: lesion masks, probabilities, lesion tables and QC pictures for new FLAIR scans."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

from deepwml.cli.common import (THIN_SLAB_HELP, add_dataset_argument, add_device_argument, add_skull_strip_options,
                                add_tta_options, add_version_argument, cortex_contrast_setting, run, run_installed,
                                thin_slab_setting)
from deepwml.constants import MIN_CORTEX_CONTRAST
from deepwml.paths import add_root_arguments
from deepwml.pretrained import BUILTIN_ALIAS, builtin_model_dir

EXIT_CASES_FAILED = 1


def build_parser() -> argparse.ArgumentParser:
    """Arguments of deepwml_predict."""
    p = argparse.ArgumentParser(
        prog="deepwml_predict",
        description=(
            "Segment white-matter lesions. Input: an image file (NIfTI, MHA/MHD, NRRD, MGH/MGZ), a folder of them, a DICOM "
            "series folder, or a folder of DICOM series folders (case id = folder name). Writes per case a mask on "
            "the input's own grid, CASE_lesions.csv, qc/CASE.png and, if asked, CASE_prob<ending>; plus summary.csv. "
            "A multi-class model (e.g. the anatomy model) writes its argmax label map instead of the mask and no lesion table. "
            "Cases whose outputs exist are skipped (resume) unless --overwrite."
        ),
    )
    p.add_argument("-i", "--input", required=True, help="image file, folder of images, DICOM series folder or folder of those, an archive of any of "
                   "them (.zip, .tar, .tar.gz, .tgz, .tar.bz2, .tar.xz: read as the folder it holds), or a CSV case list (an 'image' or 'path' column, an optional 'case_id')")
    p.add_argument("-o", "--output", required=True, help="output folder (must not be the input folder)")
    add_dataset_argument(p, required=False)
    p.add_argument("-p", "--plan", help="plan name (the PLAN folder below the dataset's results folder)")
    p.add_argument("-f", "--folds", nargs="+", help="folds to ensemble, e.g. 0 1 2 3 4 or all (default: every trained fold)")
    p.add_argument("-m", "--model", help="a trained model's PLAN folder (instead of -d/-p), e.g. one installed by deepwml_install_model, "
                   "or 'builtin': the pretrained model shipped with DeepWML (also used when neither -m nor -d/-p is given)")
    add_root_arguments(p, kinds=("results",))
    p.add_argument("--checkpoint", choices=("best", "latest"), default="best", help="which checkpoint of each fold (default: best)")
    add_device_argument(p)
    add_tta_options(p)
    p.add_argument("--threshold", type=float, default=None,
                   help="lesion probability at or above which a voxel is lesion, in (0, 1) (default: the model's "
                   "postprocessing when deepwml_find_postprocessing stored one, else its plan's; 0.55 for the shipped "
                   "model); higher trades sensitivity for precision. Outputs of an earlier run are kept unless --overwrite")
    p.add_argument("--min-lesion-ml", type=float, default=None, metavar="ML",
                   help="drop lesions (26-connected, as the lesion table counts them) smaller than this volume in ml from "
                   "the mask, e.g. 0.01 (default: the model's postprocessing, else 0: keep all); outputs of an earlier "
                   "run are kept unless --overwrite")
    p.add_argument("--min-lesion-peak", type=float, default=None, metavar="P",
                   help="drop lesions whose most probable voxel stays under this probability, e.g. 0.7 (hysteresis "
                   "thresholding: a lesion's extent is where the probability reaches --threshold, and it is kept only "
                   "with a core that reaches P; default: the model's postprocessing, else 0: keep all); outputs of an "
                   "earlier run are kept unless --overwrite")
    p.add_argument("--min-lesion-contrast", type=float, default=None, metavar="C",
                   help="drop lesions less than C times as bright as the tissue around them, e.g. 1.15: a lesion's mean "
                   "intensity over the median of the tissue within 3 mm of it in-plane (default: the model's "
                   "postprocessing, else 0: keep all); outputs of an earlier run are kept unless --overwrite")
    p.add_argument("--min-lesion-spread", type=float, default=None, metavar="S",
                   help="with --min-lesion-contrast: drop a faint lesion only when it also stands less than S ring spreads "
                   "above the tissue around it, e.g. 2.25 (its mean log intensity over the ring's median, in median "
                   "absolute deviations of the ring's log intensities: a figure a scanner's flatter contrast does not "
                   "lower, so that its faint lesions are kept; default: the model's postprocessing, else 0: the ratio "
                   "alone); outputs of an earlier run are kept unless --overwrite")
    p.add_argument("--thin-slab-mm", type=thin_slab_setting, default=None, metavar="auto|0|MM", help=THIN_SLAB_HELP)
    p.add_argument("--no-postprocessing", action="store_true",
                   help="ignore the TTA, threshold and lesion filters stored in the model by deepwml_find_postprocessing "
                   "(the plan's TTA and threshold, no filter, unless given above)")
    p.add_argument("--save-probabilities", action="store_true", help="write CASE_prob<ending> (float32 lesion probability)")
    p.add_argument("--num-parts", type=int, default=1, help="split the sorted case list into N parts (array jobs)")
    p.add_argument("--part-id", type=int, default=0, help="which part this process predicts, 0..N-1")
    p.add_argument("--series-uid", "--series", dest="series_uid", metavar="UID_OR_NAME",
                   help="the DICOM series to read when a folder holds several: its Series Instance UID, or a pattern "
                   "(regular expression, any letter case) its description, protocol or sequence name matches in every "
                   "study of the batch, e.g. 'flair.*pre' (default: the only MR image series, else the only T2-FLAIR by "
                   "name and timing, acquired before derived, before contrast before after, axial before other planes; "
                   "docs/prediction.md 'DICOM studies')")
    p.add_argument("-np", "--num-workers", type=int, default=None,
                   help="on a CPU: cases predicted side by side, each start to finish by one worker thread, the cores shared "
                   "out between them (default: one per core, at most 4; 1: one case at a time with every core, reading "
                   "and writing overlapped); on a GPU: threads reading and writing alongside the model (default 1 each)")
    p.add_argument("--no-bf16", action="store_true", help="compute in fp32 (no bf16 autocast on CPU, no AMP on CUDA)")
    p.add_argument("--int8", choices=("auto", "on", "off"), default="auto",
                   help="int8 inference on the CPU for networks without instance norm (e.g. the paper's U-Net), quantised "
                   "from the fp32 weights on a calibration batch of the first case. auto (default): used only when its "
                   "masks agree with fp32 there (Dice >= 0.99) and it is at least 1.5x faster, and not for runs of "
                   "fewer than about 64 slices; on: whenever it agrees, however fast; off: never. The decision is "
                   "printed once per fold network")
    p.add_argument("--backend", choices=("auto", "torch", "onnx"), default="auto",
                   help="what computes the networks. onnx: ONNX Runtime on the CPU in fp32, without importing torch (about "
                   "2 s of start-up); each model is exported once, checked against torch, into the user cache "
                   "(DEEPWML_CACHE_DIR). torch: PyTorch (GPU, bf16 autocast, --int8). auto (default): onnx on a CPU, "
                   "torch on a GPU, for --int8 on, for wide networks (5 M parameters or more: torch's bf16 or "
                   "int8 is faster there), for plugin networks, with the user cache off, and when a model cannot be "
                   "exported (with a note)")
    p.add_argument("--overwrite", action="store_true", help="predict again cases whose outputs exist")
    p.add_argument("--overwrite-if-changed", action="store_true",
                   help="when the output folder's cases were predicted with other settings (another model or mask "
                        "options, or an earlier DeepWML's defaults), predict every case anew instead of refusing; a "
                        "folder made with these settings resumes as usual (for scripts that re-run after an update)")
    p.add_argument("--no-qc", action="store_true", help="skip the QC pictures")
    p.add_argument("--progress", action="store_true", help="show a progress bar even when stderr is not a terminal")
    p.add_argument("--save-uncertainty", action="store_true",
                   help="write CASE_uncertainty<ending>: per-voxel uncertainty, the binary entropy (bits, 0..1) of the lesion probability")
    p.add_argument("--report", nargs="?", const="html", choices=("html", "pdf"), default=None,
                   help="write report/CASE.html, a self-contained per-patient page (volume, lesions with confidence, slices "
                   "with mask and uncertainty, input and model); '--report pdf' also prints it to report/CASE.pdf with "
                   "headless Chromium when one is on PATH (one browser for the whole run)")
    p.add_argument("--dicom-seg", action="store_true",
                   help="for DICOM series inputs, also write CASE_seg.dcm: a DICOM Segmentation referencing the series (needs highdicom)")
    p.add_argument("--dicom-findings", action="store_true",
                   help="for DICOM series inputs, also write CASE_findings.dcm: the findings (lesions, volume, locations, "
                   "Fazekas estimate) above the outlined slices as a DICOM Secondary Capture in the scan's study, for PACS "
                   "viewers that show no SEG (needs highdicom)")
    p.add_argument("--dicom-sr", action="store_true",
                   help="for DICOM series inputs, also write CASE_sr.dcm: the measurements as a DICOM Structured Report "
                   "(TID 1500: lesion count, total volume, Fazekas estimate; per lesion its outlines on the slices, volume, "
                   "location, long axis, confidence), referencing CASE_seg.dcm with --dicom-seg (needs highdicom)")
    p.add_argument("--pseudonymise", metavar="KEY_FILE", type=Path,
                   help="name each case by a keyed pseudonym (P + 12 hex digits; the same key, the same pseudonym) and "
                   "keep its file and DICOM series out of the outputs, for sharing them; KEY_FILE is made on first use "
                   "and pseudonyms.csv beside it lists who is who: keep both outside the output folder. No DICOM outputs "
                   "with it")
    p.add_argument("--bids-names", action="store_true",
                   help="name the mask, probability, uncertainty and lesion-table files BIDS-derivative style when the "
                   "case id carries BIDS entities (sub-01_ses-1_FLAIR -> sub-01_ses-1_desc-wmh_mask.nii.gz)")
    anatomy = p.add_mutually_exclusive_group()
    anatomy.add_argument("--anatomy-model", metavar="PLAN_FOLDER",
                         help="the anatomy model (lateral ventricles, white matter, cortex, infratentorial region; issue #14) "
                         "to run beside the lesion model (default: the one shipped with DeepWML, when this install has it)")
    anatomy.add_argument("--no-anatomy", action="store_true", help="do not predict the anatomy map")
    p.add_argument("--save-anatomy", action="store_true",
                   help="write CASE_anatomy<ending>: the anatomy label map on the input's grid (0 background, 1 white matter, "
                   "2 ventricle, 3 cortex, 4 infratentorial)")
    p.add_argument("--save-lesion-ids", action="store_true",
                   help="write CASE_lesionids<ending> (each lesion labelled with its lesion_id in CASE_lesions.csv, the "
                   "number the report prints beside it) and CASE_lesionids.txt (the labels' names as an ITK-SNAP label "
                   "description: id, volume, location, confidence), to find, hide or clear a lesion in a viewer")
    p.add_argument("--white-matter-only", action="store_true",
                   help="drop every lesion the anatomy map places mostly in the cortex or outside the brain, as WMH tools do "
                   "with a white-matter mask: on real MS FLAIR most such components are false positives (faint cortex "
                   "folded into thick slices); it also drops true cortical lesions")
    add_skull_strip_options(p)
    p.add_argument("--keep-outside-brain", action="store_true",
                   help="keep the lesions that have no voxel in the brain the anatomy model finds (grown 3 mm): by default "
                   "they are dropped as false positives (fat, skull base, sinuses, ghosts); without an anatomy model "
                   "nothing is dropped")
    p.add_argument("--min-cortex-contrast", type=cortex_contrast_setting, default=MIN_CORTEX_CONTRAST, metavar="K",
                   help="drop the lesions the anatomy map places in or against the cortex (cortical, juxtacortical) that are less than K times as bright as the "
                   "cortex's median: bright normal cortex, which thick slices fold into patches a lesion model takes for "
                   "lesions (default %(default)g; 0 keeps them; without an anatomy model nothing is dropped)")
    p.add_argument("--lesion-masks", type=Path, metavar="PATH",
                   help="a reader's reviewed or corrected lesion masks (a folder of CASE.nii.gz or any image ending, "
                   "CASE.seg.nrrd from 3D Slicer, or CASE.dcm, a DICOM SEG; one file for one case; > 0 is lesion, on the "
                   "scan's grid or a window of it; docs/prediction.md 'Reviewed masks'): "
                   "the lesion table, locations, Fazekas and McDonald estimates, QC picture, report and DICOM outputs "
                   "describe them as drawn instead of the model's mask (no threshold, no lesion filter); the model's "
                   "probabilities still give each lesion its mean probability and confidence (a lesion the model did not "
                   "find has a low mean probability). A finished case whose mask was corrected again is described anew")
    add_version_argument(p)
    return p


def _main(argv: Optional[List[str]]) -> int:
    args = build_parser().parse_args(argv)
    # torch, SimpleITK, scipy and pandas take seconds to import: --help and argument errors do not wait for them
    from deepwml.inference.run import PredictRequest, predict

    request = PredictRequest(
        input=Path(args.input),
        output=Path(args.output),
        model_dir=Path(args.model) if args.model else None,
        dataset=args.dataset,
        plan=args.plan,
        folds=args.folds,
        results_root=args.results_root,
        checkpoint=args.checkpoint,
        device=args.device,
        tta=args.tta,
        save_probabilities=args.save_probabilities,
        num_parts=args.num_parts,
        part_id=args.part_id,
        series_uid=args.series_uid,
        workers=args.num_workers,
        allow_bf16=not args.no_bf16,
        int8=args.int8,
        backend=args.backend,
        overwrite=args.overwrite,
        overwrite_if_changed=args.overwrite_if_changed,
        write_qc=not args.no_qc,
        progress=args.progress or sys.stderr.isatty(),
        save_uncertainty=args.save_uncertainty,
        report=args.report,
        dicom_seg=args.dicom_seg,
        dicom_findings=args.dicom_findings,
        dicom_sr=args.dicom_sr,
        bids_names=args.bids_names,
        pseudonym_key=args.pseudonymise,
        anatomy=not args.no_anatomy,
        anatomy_model=Path(args.anatomy_model) if args.anatomy_model else None,
        save_anatomy=args.save_anatomy,
        save_lesion_ids=args.save_lesion_ids,
        white_matter_only=args.white_matter_only,
        skull_strip=args.skull_strip,
        keep_outside_brain=args.keep_outside_brain,
        min_cortex_contrast=args.min_cortex_contrast,
        threshold=args.threshold,
        min_lesion_ml=args.min_lesion_ml,
        min_lesion_peak=args.min_lesion_peak,
        min_lesion_contrast=args.min_lesion_contrast,
        min_lesion_spread=args.min_lesion_spread,
        postprocessing=not args.no_postprocessing,
        thin_slab_mm=args.thin_slab_mm,
        lesion_masks=args.lesion_masks,
    )
    if request.model_dir is None and request.dataset is None and request.plan is None or args.model == BUILTIN_ALIAS:
        print(f"deepwml_predict: using the pretrained model shipped with DeepWML ({builtin_model_dir()}; read its MODEL_CARD.md)",
              file=sys.stderr)
    report = predict(request)
    print(report.describe())
    for row in report.unlike_training:
        print(f"deepwml_predict: warning: {row.case_id}: {row.acquisition_warning}", file=sys.stderr)
    if report.failed:
        print(f"deepwml_predict: {len(report.failed)} case(s) failed:", file=sys.stderr)
        for row in report.failed:
            print(f"  {row.case_id}: {row.error}", file=sys.stderr)
        return EXIT_CASES_FAILED
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point."""
    return run(_main, argv)


def entry() -> None:
    """The installed command: re-executed once with the tuned allocator (deepwml.utils.allocator), then main(), then
    exit without the interpreter's teardown (deepwml.cli.common)."""
    run_installed(main, tuned_allocator=True)


if __name__ == "__main__":
    entry()
