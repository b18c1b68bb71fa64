"""How metrics and stratification factors are named in reports and figures (no pandas: the prediction report's
page imports these too, and a prediction run loads pandas only when its first case is written)."""
from __future__ import annotations

METRIC_LABELS = {
    "dice": "Dice",
    "sensitivity": "Sensitivity",
    "precision": "Precision",
    "hd95_mm": "HD95 (mm)",
    "avd_percent": "AVD (%)",
    "lesion_recall": "Lesion recall",
    "lesion_precision": "Lesion precision",
    "lesion_f1": "Lesion F1",
}
FACTOR_LABELS = {"centre": "Centre", "disease": "Disease", "lv_group": "Lesion-volume group", "thickness_band": "Slice thickness"}
