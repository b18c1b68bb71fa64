"""Output file names: DeepWML's plain ones (CASE, CASE_prob, ...) or BIDS-derivative ones (deepwml_predict --bids-names).

The BIDS rule: a case id is BIDS-named when it is ``sub-<label>`` followed by ``_key-value`` entities and, last,
optionally a suffix without a hyphen (``sub-01_ses-2_acq-tse_FLAIR``). Its outputs keep the entities (in the
input's order, minus any ``desc-``, which the output sets), drop the input's suffix and end as follows:

===================  ==========================================
mask                 ``<entities>_desc-wmh_mask<ending>``
probabilities        ``<entities>_label-WMH_probseg<ending>``
uncertainty          ``<entities>_desc-wmh_uncertainty<ending>`` (BIDS defines no suffix for it)
lesion table         ``<entities>_desc-wmh_lesions.csv``
anatomy label map    ``<entities>_desc-anatomy_dseg<ending>``
lesion ids           ``<entities>_desc-lesionids_dseg<ending>`` (and ``.txt``, its label names)
===================  ==========================================

A case id without BIDS entities keeps the plain names. QC picture, report page and DICOM SEG keep the case id
(they are not BIDS data files); summary.csv lists case ids as always.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import List, Optional

_ENTITY = re.compile(r"^[a-zA-Z]+-[a-zA-Z0-9]+$")
_SUFFIX = re.compile(r"^[a-zA-Z0-9]+$")


@dataclass(frozen=True)
class OutputNames:
    """File stems (without ending) of a case's image and table outputs."""

    mask: str
    probabilities: str
    uncertainty: str
    lesions: str
    anatomy: str = ""
    lesion_ids: str = ""


def bids_entities(case_id: str) -> Optional[List[str]]:
    """The ``key-value`` entities of a BIDS-named case id (without its suffix and any desc-), or None."""
    parts = case_id.split("_")
    if not parts[0].startswith("sub-"):
        return None
    if len(parts) > 1 and _SUFFIX.match(parts[-1]):
        parts = parts[:-1]
    if not all(_ENTITY.match(p) for p in parts):
        return None
    return [p for p in parts if not p.startswith("desc-")]


def output_names(case_id: str, bids: bool = False) -> OutputNames:
    """Plain names, or BIDS-derivative names when ``bids`` and the case id carries BIDS entities."""
    entities = bids_entities(case_id) if bids else None
    if entities is None:
        return OutputNames(case_id, f"{case_id}_prob", f"{case_id}_uncertainty", f"{case_id}_lesions", f"{case_id}_anatomy",
                           f"{case_id}_lesionids")
    prefix = "_".join(entities)
    return OutputNames(f"{prefix}_desc-wmh_mask", f"{prefix}_label-WMH_probseg", f"{prefix}_desc-wmh_uncertainty", f"{prefix}_desc-wmh_lesions",
                       f"{prefix}_desc-anatomy_dseg", f"{prefix}_desc-lesionids_dseg")
