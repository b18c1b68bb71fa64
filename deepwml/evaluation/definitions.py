"""Plain-language definitions of every reported number, shown in report.html and summary.json."""
from __future__ import annotations

from typing import Dict

DEFINITIONS: Dict[str, str] = {
    "Masks": "Label 1 = lesion. Voxels the reference marks with the ignore value (dataset.json labels.ignore) are removed "
    "from both reference and prediction before every metric; any other value is an error.",
    "Slice": "A 2D slice along the slice axis (the coarsest-spaced image axis; a 3D scan's axial one), in the image's own geometry.",
    "Per-slice Dice / sensitivity / precision": "2TP/(|R|+|P|), TP/|R|, TP/|P| in pixels of one slice, on slices with "
    "reference lesion. With an empty prediction on such a slice: Dice 0, sensitivity 0, precision undefined (NaN, left "
    "out of medians).",
    "False-positive slice": "A slice without reference lesion on which the prediction marks lesion; its false-positive "
    "area is the predicted area (mm²). Such slices are never scored as Dice 1 and never dropped silently.",
    "Lesion volume per slice": "Reference lesion area on the slice (mm²) × slice thickness (mm) / 1000, in ml. Groups: "
    "G1 < 0.2 ml ≤ G2 < 0.7 ml ≤ G3 < 2 ml ≤ G4 < 5 ml ≤ G5.",
    "Slice-thickness band": "≤5 mm, 5–7 mm (7 included), >7 mm; thickness = spacing along the slice axis.",
    "Dice (case)": "Over the whole volume, as the MICCAI 2017 WMH challenge; 1 when both masks are empty.",
    "HD95 (case)": "Boundary = mask minus its in-plane 3×3 erosion; boundary voxel centres in world mm (spacing and "
    "direction applied); the larger of the two directed 95th percentiles of nearest-boundary distances. NaN when "
    "either mask is empty.",
    "AVD (case)": "|V_ref − V_pred| / V_ref × 100 %. 0 when both are empty, NaN when only the reference is empty.",
    "Lesion recall / precision / F1 (case)": "Lesions are 26-connected 3D components. Recall = reference lesions touched "
    "by ≥1 predicted voxel / reference lesions (1 without reference lesion); precision = predicted lesions touching the "
    "reference / predicted lesions (1 without predicted lesion); F1 = 2PR/(P+R), 0 when P+R = 0.",
    "Summaries": "median, IQR (25th–75th percentile), min–max and n over defined values; NaN values are counted as "
    "n_undefined.",
    "Statistics": "Shapiro–Wilk per group; Kruskal–Wallis across groups with n ≥ 3; pairwise two-sided Mann–Whitney U "
    "with Bonferroni correction when Kruskal–Wallis p < 0.05. Slices of one case are correlated, so slice-level "
    "p-values are descriptive.",
    "Lesion detection by lesion size": "Every lesion of every case (26-connected), binned by its own volume (< 0.03, "
    "0.03–0.1, 0.1–0.5, 0.5–2, ≥ 2 ml; an edge value goes to the bin above). Recall = reference lesions touched by a "
    "predicted voxel / reference lesions; precision = predicted lesions touching the reference / predicted lesions; "
    "pooled over cases.",
    "Lesion detection by location": "Only with anatomy maps (CASE_anatomy<ending>, deepwml_predict --save-anatomy). "
    "Reference and predicted lesions located with their case's map by deepwml_predict's rules (periventricular, "
    "juxtacortical, cortical, deep, infratentorial, unclassified); found / false as by size; pooled over the cases "
    "with a map.",
    "Lesion volume agreement": "Per case, the predicted total lesion volume against the reference's (ml; cases scored as "
    "empty included). Bland–Altman: mean difference (predicted − reference), its SD and the 95 % limits of agreement "
    "(mean ± 1.96 SD); proportional bias = least-squares slope of the difference on the mean of the two, with its "
    "p-value. ICC(A,1): two-way, absolute-agreement, single-measure intraclass correlation (McGraw & Wong 1996; "
    "Shrout & Fleiss ICC(2,1)) with its F-based 95 % interval. Pearson r and Spearman ρ with p-values. Not computed "
    "with fewer than 3 cases or when one side's volumes are all equal. The lesion counts (26-connected) are compared "
    "the same way.",
    "Calibration (ECE)": "Only with probability maps (CASE_prob<ending>). Voxels (ignore region removed) go into 10 "
    "equal-width probability bins; ECE = Σ (voxels in bin / voxels) × |mean probability − fraction of reference lesion| "
    "over the bins, pooled over cases. 'All voxels' is dominated by easy background; 'candidate voxels' are those with "
    "probability ≥ 0.05 (chosen by the probability alone, never by the reference, which would bias the figure).",
}
