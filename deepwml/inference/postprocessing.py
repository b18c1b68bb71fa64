"""A lesion model's stored postprocessing: the mask threshold and lesion filters deepwml_find_postprocessing chose on
labelled scans the model did not learn from (and whether they were chosen on left-right flip TTA, with which the
model then predicts), kept in every fold checkpoint under ``postprocessing`` and applied by deepwml_predict unless
the run gives its own (--threshold, --min-lesion-ml, --min-lesion-peak, --min-lesion-contrast, --tta / --no-tta) or
--no-postprocessing.

Checkpoints come from elsewhere too: the stored value is plain numbers (read weights-only) and anything but a
threshold in (0, 1), a smallest lesion of 0..MAX_MIN_LESION_ML ml, a peak in [0, 1), a lesion contrast of
0..MAX_MIN_LESION_CONTRAST and a true/false TTA is refused.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

from deepwml.inference.lesion_report import MAX_MIN_LESION_CONTRAST, MAX_MIN_LESION_SPREAD
from deepwml.utils.errors import DeepWMLError

#: the checkpoint key (kept by deepwml_export_model and deepwml_install_model)
POSTPROCESSING = "postprocessing"
#: a stored smallest lesion above this is not a lesion filter but a mistake (a 10 ml "smallest lesion")
MAX_MIN_LESION_ML = 10.0


@dataclass(frozen=True)
class MaskSettings:
    """How a scan's lesion probability map becomes the mask: predicted with its slices' left-right flips averaged
    in (``tta``) or not, thresholded, then lesions (26-connected) smaller than ``min_lesion_ml``, whose most
    probable voxel stays under ``min_lesion_peak`` or less than ``min_lesion_contrast`` times as bright as the tissue
    around them (deepwml.inference.lesion_contrast) dropped (0: keep all); with ``min_lesion_spread`` as well, such a
    faint lesion is dropped only when it also stands less than that many ring spreads above its ring
    (lesion_contrast.lesion_spreads), which a scanner's flatter contrast does not lower."""

    threshold: float
    min_lesion_ml: float = 0.0
    min_lesion_peak: float = 0.0
    tta: bool = False
    min_lesion_contrast: float = 0.0
    min_lesion_spread: float = 0.0

    def describe(self) -> str:
        """One phrase: 'left-right flip TTA, threshold 0.55, lesions under 0.01 ml dropped, lesions peaking under 0.8
        dropped'."""
        parts = ["left-right flip TTA"] if self.tta else []
        parts.append(f"threshold {self.threshold:g}")
        if self.min_lesion_ml > 0:
            parts.append(f"lesions under {self.min_lesion_ml:g} ml dropped")
        if self.min_lesion_peak > 0:
            parts.append(f"lesions peaking under {self.min_lesion_peak:g} dropped")
        if self.min_lesion_contrast > 0 and self.min_lesion_spread > 0:
            parts.append(f"lesions under {self.min_lesion_contrast:g} x the tissue around them and under "
                         f"{self.min_lesion_spread:g} ring spreads above it dropped")
        elif self.min_lesion_contrast > 0:
            parts.append(f"lesions under {self.min_lesion_contrast:g} x the tissue around them dropped")
        return ", ".join(parts)

    @classmethod
    def from_record(cls, record: Dict[str, Any]) -> "MaskSettings":
        """The settings of a record this project wrote (as_record's keys; those added later default to off). A
        checkpoint's record is read, and checked, by :func:`read_postprocessing`."""
        return cls(float(record["threshold"]), float(record["min_lesion_ml"]), float(record["min_lesion_peak"]),
                   bool(record.get("tta", False)), float(record.get("min_lesion_contrast", 0.0)),
                   float(record.get("min_lesion_spread", 0.0)))

    def as_record(self) -> Dict[str, Any]:
        """The settings as stored in a checkpoint (the spread bound only when there is one, so that records written
        before it existed compare equal)."""
        record = {"threshold": float(self.threshold), "min_lesion_ml": float(self.min_lesion_ml),
                  "min_lesion_peak": float(self.min_lesion_peak), "tta": bool(self.tta),
                  "min_lesion_contrast": float(self.min_lesion_contrast)}
        if self.min_lesion_spread > 0:
            record["min_lesion_spread"] = float(self.min_lesion_spread)
        return record


def _number(value: Any) -> Optional[float]:
    """A finite float from an int or float (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        return None
    return float(value)


def read_postprocessing(ckpt: Dict[str, Any], path: Path, out_channels: int) -> Optional[MaskSettings]:
    """The checkpoint's stored postprocessing, None when it has none; malformed values are refused naming the file."""
    value = ckpt.get(POSTPROCESSING)
    if value is None:
        return None
    if out_channels != 1:
        raise DeepWMLError("checkpoint has a lesion postprocessing, but this is a multi-class model", path)
    if not isinstance(value, dict):
        raise DeepWMLError(f"checkpoint's postprocessing must be a record of numbers, got {type(value).__name__}", path)
    threshold, min_ml, min_peak = (_number(value.get(k)) for k in ("threshold", "min_lesion_ml", "min_lesion_peak"))
    if threshold is None or not 0 < threshold < 1:
        raise DeepWMLError(f"checkpoint's postprocessing threshold must lie in (0, 1), got {value.get('threshold')!r}", path)
    if min_ml is None or not 0 <= min_ml <= MAX_MIN_LESION_ML:
        raise DeepWMLError(f"checkpoint's postprocessing min_lesion_ml must be 0..{MAX_MIN_LESION_ML:g} ml, "
                           f"got {value.get('min_lesion_ml')!r}", path)
    if min_peak is None or not 0 <= min_peak < 1:
        raise DeepWMLError(f"checkpoint's postprocessing min_lesion_peak must lie in [0, 1), "
                           f"got {value.get('min_lesion_peak')!r}", path)
    # absent in checkpoints from before it was recorded: chosen without TTA, and without a contrast filter
    tta = value.get("tta", False)
    if not isinstance(tta, bool):
        raise DeepWMLError(f"checkpoint's postprocessing tta must be true or false, got {tta!r}", path)
    min_contrast = _number(value.get("min_lesion_contrast", 0.0))
    if min_contrast is None or not 0 <= min_contrast <= MAX_MIN_LESION_CONTRAST:
        raise DeepWMLError(f"checkpoint's postprocessing min_lesion_contrast must be 0..{MAX_MIN_LESION_CONTRAST:g}, "
                           f"got {value.get('min_lesion_contrast')!r}", path)
    min_spread = _number(value.get("min_lesion_spread", 0.0))
    if min_spread is None or not 0 <= min_spread <= MAX_MIN_LESION_SPREAD:
        raise DeepWMLError(f"checkpoint's postprocessing min_lesion_spread must be 0..{MAX_MIN_LESION_SPREAD:g}, "
                           f"got {value.get('min_lesion_spread')!r}", path)
    return MaskSettings(threshold, min_ml, min_peak, tta, min_contrast, min_spread)


def mask_settings(plan_threshold: float, stored: Optional[MaskSettings], threshold: Optional[float] = None,
                  min_lesion_ml: Optional[float] = None, min_lesion_peak: Optional[float] = None,
                  use_stored: bool = True, tta: Optional[bool] = None, plan_tta: bool = False,
                  min_lesion_contrast: Optional[float] = None, min_lesion_spread: Optional[float] = None) -> MaskSettings:
    """The settings a run applies: each one given for the run wins, else the model's stored postprocessing (unless
    ``use_stored`` is False), else the plan's threshold and TTA and no lesion filter."""
    base = stored if (stored is not None and use_stored) else MaskSettings(plan_threshold, tta=bool(plan_tta))
    return MaskSettings(base.threshold if threshold is None else float(threshold),
                        base.min_lesion_ml if min_lesion_ml is None else float(min_lesion_ml),
                        base.min_lesion_peak if min_lesion_peak is None else float(min_lesion_peak),
                        base.tta if tta is None else bool(tta),
                        base.min_lesion_contrast if min_lesion_contrast is None else float(min_lesion_contrast),
                        base.min_lesion_spread if min_lesion_spread is None else float(min_lesion_spread))
