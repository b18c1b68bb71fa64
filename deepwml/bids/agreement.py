"""deepwml_bids group --reference: how the published masks agree with a reader's masks of the same scans.

For a site checking a model on its own labelled scans before relying on it: each published scan whose reader mask
is found (deepwml.bids.layout.find_mask: the scan's entities and the first --mask-suffix ending that exists) is
scored as deepwml_evaluate scores a case (Dice, HD95, absolute volume difference, lesion recall, precision and F1,
volumes and counts; a reader mask is lesion where it is > 0, except an --ignore-label value, which counts for
neither side as the WMH challenge's evaluator leaves out its label 2). Written as OUTPUT/wmh_agreement.tsv.
"""
from __future__ import annotations

import statistics
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from deepwml.bids.derivatives import mask_of, published_sidecars, read_sidecar
from deepwml.bids.layout import find_mask, scan_of
from deepwml.evaluation.case_metrics import case_metrics
from deepwml.evaluation.masks import scored_lesions
from deepwml.evaluation.volume_agreement import agreement_line, volume_agreement
from deepwml.imageio import read_image
from deepwml.utils.errors import DeepWMLError

TABLE_NAME = "wmh_agreement.tsv"
#: case_metrics' figures in the table, in this order
FIGURES = ("dice", "hd95_mm", "avd_percent", "lesion_recall", "lesion_precision", "lesion_f1", "ref_volume_ml",
           "pred_volume_ml", "ref_lesion_count", "pred_lesion_count")


def _score(mask_path: Path, reference_path: Path, ignore_label: Optional[int] = None) -> Dict[str, object]:
    """The figures of one published mask against a reader's (``ignore_label`` voxels left out of both); a reader mask
    off the scan's grid is an error naming it."""
    predicted, reference = read_image(mask_path), read_image(reference_path)
    problems = predicted.geometry.mismatches(reference.geometry)
    if problems:
        raise DeepWMLError(f"is not on the grid of the FLAIR it labels ({'; '.join(problems)})", reference_path)
    metrics = case_metrics(*scored_lesions(reference.array, predicted.array, ignore_label), predicted.geometry)
    return {k: metrics[k] for k in FIGURES}


def agreement_table(out: Path, bids_root: Path, masks: Path, suffixes: Sequence[str],
                    participants: Optional[Sequence[str]] = None,
                    ignore_label: Optional[int] = None) -> Tuple[pd.DataFrame, int]:
    """A row per published scan with a reader mask in ``masks``; also how many published scans had none."""
    wanted = None if not participants else {p if p.startswith("sub-") else f"sub-{p}" for p in participants}
    rows: List[Dict[str, object]] = []
    without = 0
    for sidecar in published_sidecars(out):
        scan = scan_of(bids_root, bids_root / read_sidecar(sidecar).source)
        if scan is None or (wanted is not None and scan.participant_id not in wanted):
            continue
        reference = find_mask(masks, scan, list(suffixes))
        if reference is None:
            without += 1
            continue
        row: Dict[str, object] = {"participant_id": scan.participant_id}
        if scan.session is not None:
            row["session_id"] = f"ses-{scan.session}"
        row["source"] = scan.relative
        row["reference"] = reference.relative_to(masks).as_posix()
        row.update(_score(mask_of(sidecar, scan.ending), reference, ignore_label))
        rows.append(row)
    if not rows:
        raise DeepWMLError(f"holds no reader mask for any of the published scans (endings tried: {', '.join(suffixes)})", masks)
    return pd.DataFrame(rows), without


def describe(table: pd.DataFrame, without: int) -> str:
    """One line: the scans scored, their mean and median Dice and lesion F1, and (from 3 scans) the lesion volume agreement."""
    def stats(column: str) -> str:
        values = [v for v in table[column] if np.isfinite(v)]
        return f"mean {statistics.fmean(values):.3f}, median {statistics.median(values):.3f}" if values else "n/a"

    skipped = f" ({without} published scan(s) without a reader mask left out)" if without else ""
    line = f"{len(table)} scan(s) against the reader's masks{skipped}: Dice {stats('dice')}; lesion F1 {stats('lesion_f1')}"
    volumes = agreement_line(volume_agreement(table["ref_volume_ml"], table["pred_volume_ml"]))
    return line + (f"; lesion volume, ours - reader's: {volumes}" if volumes else "")
