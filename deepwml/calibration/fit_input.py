"""What the lesion model is shown while deepwml_calibrate and deepwml_find_postprocessing fit it: the scans as
deepwml_predict shows them by default, skull-stripped to the anatomy model's brain when predict would strip them
(deepwml.inference.skull_strip.run_skull_strip), else as given.

Why: temperatures and a threshold mean the probabilities they were fitted on. Since 2026-12-07 deepwml_predict strips
the skull by default for a lesion model that learned skull-stripped scans (the shipped one did); a fit on the same
scans with their skull would tune another set of probabilities than the ones predict then cuts.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from deepwml.calibration.case_cache import checkpoint_stamps


@dataclass(frozen=True)
class FitInput:
    """How the labelled scans reach the lesion model in a fit."""

    #: the anatomy model whose brain the scans are stripped to (None: they are shown as given)
    anatomy_dir: Optional[Path] = None
    #: stripping was asked for (--skull-strip): a scan in which the anatomy model finds no brain fails, as in predict
    required: bool = False
    #: why the default leaves the scans as given although there is an anatomy model ('' otherwise)
    note: str = ""

    @property
    def skull_strip(self) -> bool:
        """Whether the scans are skull-stripped before the lesion model."""
        return self.anatomy_dir is not None

    def key(self) -> List[Any]:
        """What a fit's kept per-case results depend on here (part of their cache key)."""
        if self.anatomy_dir is None:
            return []
        from deepwml.inference.model_loading import check_model

        return ["skull_strip", self.required, checkpoint_stamps(check_model(self.anatomy_dir).checkpoints)]

    def record(self) -> Dict[str, Any]:
        """What a stored fit records of its input."""
        return {"skull_strip": self.skull_strip, "anatomy_model": None if self.anatomy_dir is None else str(self.anatomy_dir)}

    def describe(self) -> str:
        """For the command's last line."""
        if self.skull_strip:
            return f"scans skull-stripped to the brain of the anatomy model {self.anatomy_dir}, as deepwml_predict shows them"
        return self.note or "scans as given, as deepwml_predict shows them"


def fit_input(model_dir: Path, asked: Optional[bool] = None, anatomy_model: Optional[Path] = None) -> FitInput:
    """The fit's input for the lesion model in ``model_dir``: ``asked`` is --skull-strip (True), --no-skull-strip (False)
    or neither (None: as deepwml_predict decides by default, from what the model learned); ``anatomy_model`` the
    anatomy PLAN folder (None: the shipped one when this install carries it)."""
    from deepwml.inference.acquisition import learned_stripped_scans
    from deepwml.inference.anatomy import anatomy_model_dir, anatomy_spec
    from deepwml.inference.skull_strip import run_skull_strip

    if asked is False:
        return FitInput()
    anatomy_dir = anatomy_model_dir(anatomy_model, True, required=asked is True)
    strip, note = run_skull_strip(asked, anatomy_dir is not None, learned_stripped_scans(model_dir))
    if strip:  # not an anatomy model: refused before any scan is predicted
        anatomy_spec(anatomy_dir)
    return FitInput(anatomy_dir if strip else None, asked is True, note)
