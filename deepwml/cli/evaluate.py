"""deepwml_evaluate: score predicted lesion masks against reference masks, per slice (the paper) and per case (WMH challenge)."""
from __future__ import annotations

import argparse
from typing import List, Optional

from deepwml.cli.common import add_version_argument, run, run_installed
from deepwml.paths import add_root_arguments


def build_parser() -> argparse.ArgumentParser:
    """Arguments of deepwml_evaluate."""
    parser = argparse.ArgumentParser(
        prog="deepwml_evaluate",
        description="Evaluate predicted white-matter-lesion masks against reference masks: per-slice Dice, sensitivity "
        "and precision as in Zhang, Duan et al. 2021, per-case metrics as the MICCAI 2017 WMH challenge, stratified by "
        "centre, disease, lesion-volume group and slice thickness, with statistics, figures and report.html.",
    )
    parser.add_argument("-ref", "--reference", required=True, metavar="LABELS", help="folder of reference masks CASE<ending>")
    parser.add_argument("-pred", "--prediction", required=True, metavar="PREDICTIONS", help="folder of predicted masks CASE<ending>")
    parser.add_argument(
        "-prob", "--probabilities", default=None, metavar="FOLDER",
        help="folder of probability maps CASE_prob<ending> (deepwml_predict --save-probabilities) for the calibration "
        "section (ECE, reliability diagram); by default they are looked for beside the predicted masks",
    )  # fmt: skip
    parser.add_argument(
        "--anatomy", default=None, metavar="FOLDER",
        help="folder of anatomy maps CASE_anatomy<ending> (deepwml_predict --save-anatomy, on each case's grid): adds "
        "lesion detection by location (periventricular, juxtacortical, cortical, deep, infratentorial) and each "
        "lesion's location in per_lesion.csv; by default they are looked for beside the predicted masks",
    )  # fmt: skip
    parser.add_argument("-o", "--output", required=True, metavar="REPORT_DIR", help="folder for the report files")
    parser.add_argument(
        "-d", "--dataset", default=None,
        help="raw dataset id or name: supplies each case's centre, disease and the ignore label (without it, no "
        "centre/disease stratification)",
    )  # fmt: skip
    add_root_arguments(parser, kinds=("raw",))
    parser.add_argument(
        "--ignore-label", type=int, default=None, metavar="N",
        help="reference value to leave out of every metric (default: dataset.json labels.ignore, else none)",
    )  # fmt: skip
    parser.add_argument(
        "--missing-as-empty", action="store_true",
        help="score cases without a prediction as empty predictions (with a warning) instead of stopping",
    )  # fmt: skip
    parser.add_argument("-np", "--num-processes", type=int, default=1, metavar="N", help="cases evaluated in parallel (default 1)")
    parser.add_argument("--against", metavar="REPORT_DIR",
                        help="another method's deepwml_evaluate report folder on the same cases (e.g. the shipped model "
                             "before fine-tuning, or another tool's masks): adds paired Wilcoxon signed-rank tests of "
                             "every per-case and per-slice metric")
    parser.add_argument("--no-resume", action="store_true", help="recompute every case instead of reusing REPORT_DIR/.cache")
    parser.add_argument("--progress", action="store_true", help="show the progress bar even when stderr is not a terminal")
    add_version_argument(parser)
    return parser


def _main(argv: Optional[List[str]]) -> int:
    """Parse arguments, evaluate, print headline numbers."""
    args = build_parser().parse_args(argv)
    if args.num_processes < 1:
        build_parser().error("-np must be at least 1")
    # imported here so --help stays fast
    from deepwml.evaluation import evaluate_folders

    summary = evaluate_folders(
        args.reference,
        args.prediction,
        args.output,
        dataset=args.dataset,
        raw_root=args.raw_root,
        ignore_label=args.ignore_label,
        missing_as_empty=args.missing_as_empty,
        n_jobs=args.num_processes,
        progress=True if args.progress else None,
        resume=not args.no_resume,
        prob_dir=args.probabilities,
        against=args.against,
        anatomy_dir=args.anatomy,
    )
    _print_summary(summary, args.output)
    return 0


def _print_summary(summary: dict, out_dir: str) -> None:
    """A few headline numbers on stdout."""
    s, c = summary["slices"], summary["cases"]

    def med(stats: dict) -> str:
        """The median with 3 decimals, or n/a."""
        return "n/a" if stats["median"] is None else f"{stats['median']:.3f}"

    print(f"cases: {c['n_cases']}  slices with reference lesion: {s['n_with_reference_lesion']}")
    print(
        f"per slice  median Dice {med(s['overall']['dice'])}  sensitivity {med(s['overall']['sensitivity'])}  "
        f"precision {med(s['overall']['precision'])}"
    )
    print(
        f"per case   median Dice {med(c['overall']['dice'])}  HD95 {med(c['overall']['hd95_mm'])} mm  "
        f"AVD {med(c['overall']['avd_percent'])} %  lesion F1 {med(c['overall']['lesion_f1'])}"
    )
    print(f"false-positive slices: {s['n_false_positive_slices']} of {s['n_without_reference_lesion']} without reference lesion")
    calibration = summary.get("calibration")
    if calibration is not None:
        def ece(part: dict) -> str:
            """ECE with 4 decimals, or n/a."""
            return "n/a" if part["ece"] is None else f"{part['ece']:.4f}"

        print(f"calibration ({calibration['n_cases']} cases)  ECE all voxels {ece(calibration['all_voxels'])}  "
              f"candidate voxels {ece(calibration['candidate_voxels'])}")
    against = summary.get("against")
    if against is not None:
        for metric in ("dice", "lesion_f1"):
            r = against["cases"][metric]
            verdict = (f"Wilcoxon p {r['p']:.3g} (Bonferroni {r['p_bonferroni']:.3g})" if r["testable"] else r["reason"])
            print(f"against {against['other_prediction_dir']}: case {metric} median {_fmt(r['median_this'])} vs "
                  f"{_fmt(r['median_other'])}, median difference {_fmt(r['median_difference'])}; {verdict}")
    print(f"report: {out_dir}/report.html")


def _fmt(value) -> str:
    """Three decimals, n/a when undefined."""
    return "n/a" if value is None else f"{value:.3f}"


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point."""
    return run(_main, argv)


def entry() -> None:
    """The installed command (and ``python -m``): main(), then exit without the interpreter's teardown
    (deepwml.cli.common.run_installed)."""
    run_installed(main)


if __name__ == "__main__":
    entry()
