"""Does a prediction run segment the scans as the model's stored temperatures and postprocessing were fitted on them?

deepwml_calibrate and deepwml_find_postprocessing record how they showed their labelled scans to the lesion model
(skull-stripped or as given) and which anatomy rules cut the masks a search scored (lesions outside the brain
dropped, the cortex bound): deepwml.calibration.fit_input.FitInput.record. A threshold and lesion filters chosen on
skull-stripped scans with those rules are tuned to other probabilities and masks than a run that shows the scans
with their skull, or leaves a rule out, computes. deepwml_predict still writes its masks, and says what differs.
A fit from before these records were kept (the shipped model's) records nothing, so nothing is claimed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence

#: the keys of a stored fit's record that say how its scans were segmented, in the order they are told
FIT_INPUT_KEYS = ("skull_strip", "outside_brain_dropped", "min_cortex_contrast")
#: the two stored fits a checkpoint can carry (the keys of checkpoint_fits)
CALIBRATION, POSTPROCESSING = "calibration", "postprocessing"


@dataclass(frozen=True)
class RunSegmentation:
    """How a prediction run segments its scans, in the terms a fit records."""

    skull_strip: bool
    outside_brain_dropped: bool
    min_cortex_contrast: float

    def as_record(self) -> Dict[str, Any]:
        """The run in a fit record's keys."""
        return {"skull_strip": self.skull_strip, "outside_brain_dropped": self.outside_brain_dropped,
                "min_cortex_contrast": self.min_cortex_contrast}


def fitted_as(record: Any) -> Dict[str, Any]:
    """The keys of a stored fit's record that say how its scans were segmented ({} without any: an older fit)."""
    if not isinstance(record, Mapping):
        return {}
    return {k: record[k] for k in FIT_INPUT_KEYS if isinstance(record.get(k), (bool, int, float))}


def checkpoint_fits(ckpt: Mapping[str, Any]) -> Dict[str, Dict[str, Any]]:
    """How each stored fit of a checkpoint segmented its scans: {CALIBRATION: ..., POSTPROCESSING: ...}."""
    stored = ckpt.get("postprocessing")
    return {CALIBRATION: fitted_as(ckpt.get("calibration")),
            POSTPROCESSING: fitted_as(stored.get("record") if isinstance(stored, Mapping) else None)}


#: how a fit's (and, after it, the run's) yes or no of each boolean setting is told
_SAID = {
    "skull_strip": {True: ("skull-stripped scans", "skull-stripped"), False: ("scans as given", "as given")},
    "outside_brain_dropped": {True: ("lesions outside the brain dropped", "dropped"),
                              False: ("lesions outside the brain kept", "kept")},
}


def _words(key: str, value: Any, run: bool = False) -> str:
    """One recorded setting in words (``run``: the run's, told after the fit's)."""
    if key in _SAID:
        return _SAID[key][bool(value)][run]
    if float(value) > 0:
        return f"under {float(value):g} x" if run else f"cortical and juxtacortical lesions under {float(value):g} x the cortex dropped"
    return "none dropped" if run else "no cortex bound"


def differences(fitted: Mapping[str, Any], run: RunSegmentation, keys: Sequence[str] = FIT_INPUT_KEYS) -> List[str]:
    """Each of ``keys`` the fit recorded and the run does otherwise, as 'FITTED (this run: RUN)' ([] when alike)."""
    now = run.as_record()
    out = []
    for key in keys:
        if key not in fitted:
            continue
        same = (abs(float(fitted[key]) - float(now[key])) < 1e-9 if key == "min_cortex_contrast"
                else bool(fitted[key]) == bool(now[key]))
        if not same:
            out.append(f"{_words(key, fitted[key])} (this run: {_words(key, now[key], run=True)})")
    return out


def fit_notes(fits: Optional[Sequence[Mapping[str, Mapping[str, Any]]]], run: RunSegmentation, calibrated: bool,
              stored_postprocessing: bool) -> List[str]:
    """deepwml_predict's notes on the stored fits the run uses (``calibrated``: it applies the folds' temperatures;
    ``stored_postprocessing``: some of its mask settings are the stored ones) but segments otherwise than they were
    fitted; ``fits``: each fold's checkpoint_fits (the folds were fitted together, so the first that says counts)."""
    def first(kind: str) -> Dict[str, Any]:
        """The first fold's record of ``kind`` that says anything."""
        return next((dict(f.get(kind) or {}) for f in fits or [] if f.get(kind)), {})

    notes = []
    if calibrated:
        # temperatures are fitted on probabilities: only what the lesion model is shown changes them
        changed = differences(first(CALIBRATION), run, keys=("skull_strip",))
        if changed:
            notes.append(f"the model's temperatures were fitted on {'; '.join(changed)}: its probabilities may be less "
                         "well calibrated here (deepwml_calibrate with this run's options fits them again)")
    if stored_postprocessing:
        changed = differences(first(POSTPROCESSING), run)
        if changed:
            notes.append(f"the model's stored threshold and lesion filters were chosen on masks made with "
                         f"{'; '.join(changed)}: they may cut this run's masks less well (deepwml_find_postprocessing "
                         "with this run's options chooses them again)")
    return notes
