"""How deepwml_calibrate, deepwml_find_postprocessing and deepwml_find_best_configuration see a labelled scan: as
deepwml_predict segments it by default. The lesion model is shown the scan skull-stripped to the anatomy model's brain
when predict would strip it (deepwml.inference.skull_strip.run_skull_strip), else as given; and the anatomy map's
rules that predict applies to a mask (lesions with no voxel in the brain dropped, deepwml.inference.outside_brain;
faint lesions in or against the cortex dropped, deepwml.inference.cortex_contrast) are applied to every candidate mask a search
scores.

Why: temperatures and a threshold mean the probabilities they were fitted on, and a search's scores should be those
of the masks predict then writes. Since 2026-12-07 deepwml_predict strips the skull by default for a lesion model
that learned skull-stripped scans (the shipped one did); a fit on the same scans with their skull would tune another
set of probabilities than the ones predict cuts.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from deepwml.calibration.case_cache import checkpoint_stamps
from deepwml.calibration.lesion_rules import LesionRules
from deepwml.constants import MIN_CORTEX_CONTRAST


@dataclass(frozen=True)
class FitInput:
    """How the labelled scans reach the lesion model in a fit, and which anatomy rules cut its masks."""

    #: the anatomy model predict runs beside the lesion model (None: none, so nothing below applies)
    anatomy_dir: Optional[Path] = None
    #: the lesion model sees only that model's brain (skull stripping)
    strip: bool = False
    #: stripping was asked for (--skull-strip): a scan in which the anatomy model finds no brain fails, as in predict
    required: bool = False
    #: why the default leaves the scans as given although there is an anatomy model ('' otherwise)
    note: str = ""
    #: lesions with no voxel in the anatomy model's brain are dropped (predict's default with an anatomy model)
    drop_outside: bool = False
    #: cortical and juxtacortical lesions under this many times the cortex's median are dropped (0: not)
    cortex_contrast: float = 0.0

    @property
    def mask_rules(self) -> bool:
        """Whether the anatomy map cuts the masks (outside the brain, faint cortex)."""
        return self.anatomy_dir is not None and (self.drop_outside or self.cortex_contrast > 0)

    def runs_anatomy(self, masks: bool) -> bool:
        """Whether a fit runs the anatomy model: to strip, or (``masks``: a search that scores masks) for its rules."""
        return self.strip or (masks and self.mask_rules)

    def key(self, masks: bool = True) -> List[Any]:
        """What a fit's kept per-case results depend on here (part of their cache key); ``masks``: a search."""
        if not self.runs_anatomy(masks):
            return []
        from deepwml.inference.model_loading import check_model

        from deepwml.inference.output_folder import CORTEX_RULE_LOCATIONS

        # the cortex bound's reach is part of what it drops (juxtacortical lesions too since 2026-12-07)
        rules = [self.drop_outside, self.cortex_contrast, CORTEX_RULE_LOCATIONS] if masks else []
        return ["skull_strip" if self.strip else "as given", self.required, *rules,
                checkpoint_stamps(check_model(self.anatomy_dir).checkpoints)]

    def record(self, masks: bool = True) -> Dict[str, Any]:
        """What a stored fit records of its input (``masks``: and of the rules that cut a search's masks)."""
        used = self.runs_anatomy(masks)
        out = {"skull_strip": self.strip, "anatomy_model": str(self.anatomy_dir) if used else None}
        if masks:
            out.update(outside_brain_dropped=self.drop_outside and used, min_cortex_contrast=self.cortex_contrast if used else 0.0)
        return out

    def describe(self, masks: bool = True) -> str:
        """For a command's last line."""
        parts = [f"scans skull-stripped to the brain of the anatomy model {self.anatomy_dir}" if self.strip
                 else self.note or "scans as given"]
        if masks and self.mask_rules:
            rules = (["lesions outside the brain"] if self.drop_outside else []) + (
                [f"cortical and juxtacortical lesions under {self.cortex_contrast:g} x the cortex"] if self.cortex_contrast else [])
            model = "its" if self.strip else f"the anatomy model {self.anatomy_dir}'s"
            parts.append(f"masks without {' and '.join(rules)} by {model} map")
        return "; ".join(parts) + ", as deepwml_predict segments them"


def fit_input(model_dir: Path, asked: Optional[bool] = None, anatomy_model: Optional[Path] = None, anatomy: bool = True,
              keep_outside_brain: bool = False, min_cortex_contrast: float = MIN_CORTEX_CONTRAST) -> FitInput:
    """The fit's input for the lesion model in ``model_dir``, decided as deepwml_predict decides it: ``asked`` is
    --skull-strip (True), --no-skull-strip (False) or neither (None: from what the model learned); ``anatomy_model``
    the anatomy PLAN folder (None: the shipped one when this install carries it; ``anatomy`` False: none, as
    --no-anatomy); ``keep_outside_brain`` and ``min_cortex_contrast`` as predict's options of those names."""
    from deepwml.inference.acquisition import learned_stripped_scans
    from deepwml.inference.anatomy import anatomy_model_dir, anatomy_spec
    from deepwml.inference.cortex_contrast import check_cortex_contrast
    from deepwml.inference.skull_strip import run_skull_strip

    anatomy_dir = anatomy_model_dir(anatomy_model, anatomy, required=asked is True)
    strip, note = run_skull_strip(asked, anatomy_dir is not None, learned_stripped_scans(model_dir))
    if anatomy_dir is None:
        return FitInput(note=note)
    anatomy_spec(anatomy_dir)  # not an anatomy model: refused before any scan is predicted
    return FitInput(anatomy_dir, strip, asked is True, note, not keep_outside_brain, check_cortex_contrast(min_cortex_contrast))


def anatomy_rules(shown: FitInput, anatomy: np.ndarray, image: np.ndarray, geometry: Any) -> LesionRules:
    """The anatomy map's rules as deepwml_predict applies them to a mask (deepwml.inference.pipeline.write_case), for
    the lesions of a search's candidate masks of one case (deepwml.calibration.lesion_rules). Both drop whole lesions,
    each judged by itself (the cortex's median leaves out the voxels of the lesions kept so far: predict's leaves out
    those of its filtered mask, a difference of a few specks in the whole cortex)."""
    return LesionRules(anatomy, image, geometry, shown.drop_outside, shown.cortex_contrast)
