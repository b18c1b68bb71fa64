"""Evaluate a folder of predicted masks against reference masks and write the whole report (the API behind deepwml_evaluate)."""
from __future__ import annotations

import numbers
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import numpy as np
import pandas as pd

import deepwml
from deepwml.datasets import RawDataset
from deepwml.evaluation.calibration import evaluate_calibration, reliability_figure
from deepwml.evaluation.case_metrics import CASE_METRICS
from deepwml.evaluation.cases import pair_cases
from deepwml.evaluation.definitions import DEFINITIONS
from deepwml.evaluation.figures import boxplot_figure, volume_agreement_figure
from deepwml.evaluation.report import build_report, figure_html, statistics_table
from deepwml.evaluation.run_cases import CACHE_FOLDER, evaluate_cases
from deepwml.evaluation.labels import METRIC_LABELS
from deepwml.evaluation.lesion_locations import attach_anatomy_maps, detection_by_location, location_table
from deepwml.evaluation.lesion_sizes import detection_by_size, size_table
from deepwml.evaluation.paired import compare_with, paired_tables, read_report
from deepwml.evaluation.paired_lesions import paired_detection, paired_detection_table, read_lesions
from deepwml.evaluation.stratify import SLICE_METRICS
from deepwml.evaluation.summary import attach_meta, build_summary, build_tables, fp_table, json_ready, slice_factors
from deepwml.evaluation.tables import Table
from deepwml.evaluation.volume_agreement import agreement_table, count_agreement, volume_agreement
from deepwml.paths import raw_root as default_raw_root
from deepwml.utils.atomic import atomic_path, write_json, write_text
from deepwml.utils.errors import DeepWMLError

PathLike = Union[str, Path]

CASE_COLUMNS = [
    "case", "centre", "disease", "slice_thickness_mm", "thickness_band", "prediction_missing", "ref_empty", "pred_empty",
    *CASE_METRICS,
    "ref_lesion_count", "pred_lesion_count", "ref_lesions_detected", "pred_lesions_touching_ref",
    "ref_volume_ml", "pred_volume_ml", "n_slices", "n_lesion_slices", "n_false_positive_slices",
    "false_positive_slice_area_mm2", "ignored_voxels",
]  # fmt: skip

#: (file name, factor, title) of the box-plot figures; centre/disease ones need a dataset.
FIGURES = (
    ("fig3_by_centre.png", "centre", "Fig. 3a. Per-slice performance per centre"),
    ("fig3_by_disease.png", "disease", "Fig. 3b. Per-slice performance per disease"),
    ("fig4_by_lv_group.png", "lv_group", "Fig. 4. Per-slice performance per lesion-volume group (G1 < 0.2 ml … G5 ≥ 5 ml)"),
    ("fig_by_thickness.png", "thickness_band", "Per-slice performance per slice-thickness band"),
)


FIGURE_CAPTION = (
    "slices with reference lesion; box = median and IQR, whiskers = 1.5 × IQR, dots = outliers; "
    "n = slices with a defined value (precision is undefined where the prediction is empty)."
)

VOLUME_CAPTION = ("volume_agreement.png: left, each case's predicted against its reference total lesion volume (dashed: "
                  "identity); right, Bland–Altman: the difference against the mean of the two, with the mean difference "
                  "(solid) and the 95 % limits of agreement (dashed); colour = disease (with -d).")


def resolve_dataset(dataset: Union[None, str, int, RawDataset], raw_root: Optional[PathLike] = None) -> Optional[RawDataset]:
    """A RawDataset from an id, a name or an instance (None stays None)."""
    if dataset is None or isinstance(dataset, RawDataset):
        return dataset
    return RawDataset.find(default_raw_root(raw_root), dataset)


def evaluate_folders(
    ref_dir: PathLike,
    pred_dir: PathLike,
    out_dir: PathLike,
    dataset: Union[None, str, int, RawDataset] = None,
    raw_root: Optional[PathLike] = None,
    ignore_label: Optional[int] = None,
    missing_as_empty: bool = False,
    n_jobs: int = 1,
    progress: Optional[bool] = None,
    resume: bool = True,
    prob_dir: Optional[PathLike] = None,
    against: Optional[PathLike] = None,
    anatomy_dir: Optional[PathLike] = None,
) -> Dict[str, Any]:
    """Score every reference case against its prediction, write per_slice.csv, per_case.csv, summary.json,
    table2.md, figures/ and report.html to ``out_dir``, and return the summary.

    Calibration (ECE, reliability diagram) is added when probability maps CASE_prob<ending> are in ``prob_dir``
    (then required) or, without it, beside the predicted masks. With ``against`` (another method's report folder on
    the same cases), paired Wilcoxon tests of every metric are added. With anatomy maps CASE_anatomy<ending> in
    ``anatomy_dir`` (then required) or, without it, beside the predicted masks, lesion detection is also given per
    location."""
    out_dir = Path(out_dir)
    other = None
    if against is not None:  # read before any work: a wrong folder fails at once
        if Path(against).expanduser().resolve() == out_dir.expanduser().resolve():
            raise DeepWMLError("--against names this report's own folder: give the other method's report folder", out_dir)
        other = read_report(Path(against))
    raw = resolve_dataset(dataset, raw_root)
    if ignore_label is None and raw is not None:
        ignore_label = raw.meta.ignore_label
    pairs, missing = pair_cases(ref_dir, pred_dir, missing_as_empty)
    pairs, without_map = attach_anatomy_maps(pairs, anatomy_dir if anatomy_dir is not None else pred_dir, anatomy_dir is not None)
    notes: List[str] = []
    if raw is None:
        notes.append("No dataset given (-d): stratification by centre and disease skipped.")
        print("[deepwml_evaluate] note: no dataset given (-d); stratification by centre and disease skipped", file=sys.stderr)
    if missing:
        notes.append(f"{len(missing)} case(s) had no prediction and were scored as empty: {', '.join(missing)}.")
    if without_map:
        notes.append(f"Lesion locations cover the cases with an anatomy map; without one: {', '.join(without_map[:10])}.")
    cache_dir = out_dir / CACHE_FOLDER if resume else None
    cases, slices, lesions = evaluate_cases(pairs, ignore_label, cache_dir, n_jobs, progress)
    calibration = evaluate_calibration(pairs, Path(prob_dir if prob_dir is not None else pred_dir), ignore_label, prob_dir is not None)
    if calibration is not None and calibration["cases_without_probabilities"]:
        notes.append(f"Calibration covers {calibration['n_cases']} case(s); without a probability map: "
                     f"{', '.join(calibration['cases_without_probabilities'][:10])}.")
    not_in_json = attach_meta(cases, slices, raw.meta.cases if raw is not None else None, lesions)
    if not_in_json:
        notes.append(f"{len(not_in_json)} case(s) are not in dataset.json and count as centre/disease 'unknown': {', '.join(not_in_json[:10])}.")
    with_meta = raw is not None
    summary = {
        "deepwml_version": deepwml.__version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "reference_dir": str(Path(ref_dir).resolve()),
        "prediction_dir": str(Path(pred_dir).resolve()),
        "dataset": raw.name if raw is not None else None,
        "ignore_label": ignore_label,
        "missing_predictions": missing,
        "cases_not_in_dataset_json": not_in_json,
        **build_summary(cases, slices, with_meta),
        "volume_agreement": json_ready(volume_agreement(cases["ref_volume_ml"], cases["pred_volume_ml"])),
        "count_agreement": json_ready(count_agreement(cases["ref_lesion_count"], cases["pred_lesion_count"])),
        "lesions_by_size": json_ready(detection_by_size(lesions)),
        "lesions_by_location": json_ready(detection_by_location(lesions, without_map)) if any(p.anatomy for p in pairs) else None,
        "calibration": calibration,
        "notes": notes,
        "definitions": DEFINITIONS,
    }
    if other is not None:
        summary["against"] = compare_with(other, cases, slices, summary)
        summary["against"]["lesions_by_size"] = json_ready(paired_detection(lesions, read_lesions(other["folder"])))
        notes.extend(summary["against"]["notes"])
    write_outputs(out_dir, cases, slices, lesions, summary, with_meta)
    return summary


def write_outputs(out_dir: Path, cases: pd.DataFrame, slices: pd.DataFrame, lesions: pd.DataFrame, summary: Dict[str, Any],
                  with_meta: bool) -> None:
    """Write every report file atomically."""
    _write_csv(out_dir / "per_case.csv", cases[CASE_COLUMNS])
    _write_csv(out_dir / "per_slice.csv", slices)
    _write_csv(out_dir / "per_lesion.csv", lesions)
    tables = build_tables(cases, slices, with_meta)
    tables["fp"] = fp_table(slices, [f for f in slice_factors(with_meta) if f != "lv_group"])
    tables["stats_slices"] = statistics_table(summary["statistics"]["slices"], "Group comparisons, per-slice metrics")
    tables["stats_cases"] = statistics_table(summary["statistics"]["cases"], "Group comparisons, per-case metrics")
    tables["stats_cases"].key = "statistics-cases"
    if summary.get("against") is not None:
        tables["against_cases"], tables["against_slices"] = paired_tables(summary["against"])
        tables["against_lesions"] = paired_detection_table(summary["against"]["lesions_by_size"],
                                                           summary["against"]["other_prediction_dir"] or summary["against"]["other_report"])
    tables["volume_agreement"] = agreement_table(summary["volume_agreement"])
    tables["count_agreement"] = agreement_table(summary["count_agreement"])
    tables["lesion_sizes"] = size_table(summary["lesions_by_size"])
    if summary["lesions_by_location"] is not None:
        tables["lesion_locations"] = location_table(summary["lesions_by_location"])
    write_text(out_dir / "table2.md", _markdown(tables, summary))
    figures = _write_figures(out_dir / "figures", slices[slices["has_reference_lesion"]], with_meta)
    if summary.get("calibration") is not None:
        figures["calibration"] = reliability_figure(summary["calibration"], out_dir / "figures" / "reliability.png")
    figures["volume_agreement"] = volume_agreement_figure(cases, summary["volume_agreement"], out_dir / "figures" / "volume_agreement.png")
    _write_report(out_dir / "report.html", cases, summary, tables, figures)
    write_json(out_dir / "summary.json", summary)


def _write_csv(path: Path, frame: pd.DataFrame) -> None:
    """A CSV written atomically."""
    with atomic_path(path, ".csv") as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6g")


def _markdown(tables: Dict[str, Table], summary: Dict[str, Any]) -> str:
    """table2.md: Table 2 first, then the stratified and case-level tables."""
    head = f"# DeepWML evaluation\n\n{summary['cases']['n_cases']} cases, {summary['slices']['n_with_reference_lesion']} slices with reference lesion.\n\n"
    order = (["table2", "lv_group", "thickness_band", "fp"] + [k for k in tables if k.startswith("cases_")] + [k for k in ("lesion_sizes", "lesion_locations") if k in tables] + ["volume_agreement", "count_agreement"]
             + [k for k in ("against_cases", "against_slices", "against_lesions") if k in tables])
    return head + "\n".join(tables[k].to_markdown() for k in order)


def _write_figures(folder: Path, scored: pd.DataFrame, with_meta: bool) -> Dict[str, Path]:
    """The box-plot figures that apply; returns {factor: path}."""
    out = {}
    for name, factor, title in FIGURES:
        if factor in ("centre", "disease") and not with_meta:
            continue
        out[factor] = boxplot_figure(scored, factor, SLICE_METRICS, title, folder / name)
    return out


def _write_report(path: Path, cases: pd.DataFrame, summary: Dict[str, Any], tables: Dict[str, Table], figures: Dict[str, Path]) -> None:
    """report.html with every table and figure inline."""
    s, c = summary["slices"], summary["cases"]
    overall = s["overall"]
    cards = [
        ("cases", str(c["n_cases"])),
        ("slices with reference lesion", str(s["n_with_reference_lesion"])),
        ("median slice Dice", _num(overall["dice"]["median"])),
        ("median case Dice", _num(c["overall"]["dice"]["median"])),
        ("median case HD95 (mm)", _num(c["overall"]["hd95_mm"]["median"])),
        ("false-positive slices", f"{s['n_false_positive_slices']} of {s['n_without_reference_lesion']}"),
    ]
    if summary["volume_agreement"]["testable"]:
        cards.append(("lesion volume ICC(A,1)", f"{summary['volume_agreement']['icc_a1']['value']:.3f}"))
    boxplots = {factor for _, factor, _ in FIGURES}
    fig = {k: figure_html(p, f"{p.name}: {FIGURE_CAPTION}") for k, p in figures.items() if k in boxplots}
    sections = [
        ("Per-slice performance (Table 2)", [tables["table2"].to_html()] + [fig[k] for k in ("centre", "disease") if k in fig]),
        ("By lesion-volume group", [tables["lv_group"].to_html(), fig["lv_group"]]),
        ("By slice thickness", [tables["thickness_band"].to_html(), fig["thickness_band"]]),
        ("Slices without reference lesion", [tables["fp"].to_html()]),
        ("Per-case metrics (MICCAI 2017 WMH challenge definitions)", [t.to_html() for k, t in tables.items() if k.startswith("cases_")]),
        ("Lesion detection by lesion size", [tables["lesion_sizes"].to_html()]),
        *([("Lesion detection by location", [tables["lesion_locations"].to_html()])] if "lesion_locations" in tables else []),
        ("Lesion volume and count agreement", [tables["volume_agreement"].to_html(), figure_html(figures["volume_agreement"], VOLUME_CAPTION),
                                               tables["count_agreement"].to_html()]),
        ("Statistics", [tables["stats_slices"].to_html(), tables["stats_cases"].to_html()]),
        ("Cases", [_case_table(cases).to_html()]),
    ]
    if summary.get("against") is not None:
        sections.insert(-1, ("Against another method (paired)", [tables["against_cases"].to_html(),
                                                                  tables["against_slices"].to_html(),
                                                                  tables["against_lesions"].to_html()]))
    if summary.get("calibration") is not None:
        sections.insert(-1, ("Calibration of lesion probabilities", _calibration_html(summary["calibration"], figures["calibration"])))
        cards.append(("ECE, candidate voxels", _num4(summary["calibration"]["candidate_voxels"]["ece"])))
    meta = [
        f"Reference: {summary['reference_dir']}",
        f"Prediction: {summary['prediction_dir']}",
        f"Dataset: {summary['dataset'] or 'none (no centre/disease stratification)'}; ignore label: {summary['ignore_label'] if summary['ignore_label'] is not None else 'none'}",
        f"DeepWML {summary['deepwml_version']}, {summary['created']}",
    ]
    build_report(path, "DeepWML evaluation report", meta, cards, sections, summary["notes"], summary["definitions"])


def _calibration_html(calibration: Dict[str, Any], figure: Path) -> List[str]:
    """The calibration section: ECE table and reliability diagram."""
    rows = [
        [label, _num4(part["ece"]), str(part["voxels"])]
        for label, part in (("All voxels", calibration["all_voxels"]),
                            (f"Candidate voxels (probability ≥ {calibration['candidate_probability']:g})", calibration["candidate_voxels"]))
    ]  # fmt: skip
    table = Table(f"Expected calibration error over {calibration['n_cases']} case(s), {calibration['n_bins']} equal-width bins",
                  ["Voxels", "ECE", "n voxels"], rows, key="calibration")
    caption = ("Reliability diagram: per probability bin, the fraction of voxels that are reference lesion (bars) against "
               "the bin's mean probability (dots); on the diagonal = calibrated. Below: voxels per bin (log scale).")
    return [table.to_html(), figure_html(figure, caption)]


def _num4(value: Optional[float]) -> str:
    """Four decimals; '–' when undefined."""
    return "–" if value is None else f"{value:.4f}"


def _case_table(cases: pd.DataFrame) -> Table:
    """Every case in one row."""
    columns = ["centre", "disease", "slice_thickness_mm", *CASE_METRICS, "ref_volume_ml", "pred_volume_ml", "ref_lesion_count", "pred_lesion_count", "n_false_positive_slices"]
    labels = {"slice_thickness_mm": "Slice thickness (mm)", "ref_volume_ml": "Ref. volume (ml)", "pred_volume_ml": "Pred. volume (ml)",
              "ref_lesion_count": "Ref. lesions", "pred_lesion_count": "Pred. lesions", "n_false_positive_slices": "FP slices",
              "centre": "Centre", "disease": "Disease"}  # fmt: skip
    header = ["Case"] + [labels.get(k, METRIC_LABELS.get(k, k)) for k in columns]
    rows = [[str(r["case"])] + [_cell(r[k]) for k in columns] for _, r in cases.iterrows()]
    return Table("Per-case results", header, rows, note="– = undefined (see Definitions)", key="cases")


def _cell(value: Any) -> str:
    """Format one table cell."""
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    return _num(None if value is None else float(value))


def _num(value: Optional[float]) -> str:
    """Two decimals; '–' when undefined."""
    if value is None or value != value:
        return "–"
    return f"{value:.2f}"
