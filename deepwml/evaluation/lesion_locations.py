"""Lesion detection by location, when each case has an anatomy map (deepwml_predict --save-anatomy).

Where a model misses or invents lesions matters as much as how many: juxtacortical and infratentorial lesions count
for McDonald 2017's dissemination in space and are the hardest on thick-slice FLAIR, and most of the shipped model's
false lesions on real MS scans lie at the cortex (benchmarks/README.md). Reference and predicted lesions are located
with the same rules and map as deepwml_predict's lesion table (deepwml/anatomy/location.py), so the table tells a
site where its readers and the model disagree.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, List, Tuple, Union

import numpy as np
import pandas as pd

from deepwml.anatomy.location import (CORTICAL, DEEP, INFRATENTORIAL_LOC, JUXTACORTICAL, PERIVENTRICULAR, UNCLASSIFIED,
                                      check_anatomy)
from deepwml.evaluation.cases import ANATOMY_SUFFIX, CasePair, find_case_maps
from deepwml.evaluation.lesion_sizes import detection_row, detection_table
from deepwml.evaluation.tables import Table
from deepwml.imageio import Geometry, read_image
from deepwml.utils.errors import DeepWMLError

#: table order: McDonald's regions first
LOCATION_ORDER = (PERIVENTRICULAR, JUXTACORTICAL, CORTICAL, DEEP, INFRATENTORIAL_LOC, UNCLASSIFIED)


def attach_anatomy_maps(pairs: List[CasePair], folder: Union[str, Path], required: bool) -> Tuple[List[CasePair], List[str]]:
    """Each pair with its CASE_anatomy<ending> from ``folder``; also the cases without one (none when the folder holds
    no map at all). ``required`` (the folder was given): a folder without maps is an error naming it."""
    maps = find_case_maps(folder, [p.case_id for p in pairs], ANATOMY_SUFFIX, "anatomy")
    if required and not maps:
        raise DeepWMLError("holds no anatomy maps (CASE_anatomy<ending>, written by deepwml_predict --save-anatomy)", folder)
    attached = [replace(p, anatomy=maps.get(p.case_id)) for p in pairs]
    return attached, [p.case_id for p in attached if p.anatomy is None] if maps else []


def read_anatomy(path: Path, geometry: Geometry) -> np.ndarray:
    """A case's anatomy map, checked to lie on its masks' grid; errors name the file."""
    image = read_image(path, dtype=None)
    problems = image.geometry.mismatches(geometry)
    if problems:
        raise DeepWMLError(f"is not on the grid of the case's masks ({'; '.join(problems)})", path)
    try:
        return check_anatomy(image.array, image.array.shape).astype(np.uint8, copy=False)
    except DeepWMLError as error:
        raise DeepWMLError(str(error), path) from None


def locations_of(mask: np.ndarray, geometry: Geometry, anatomy: np.ndarray) -> List[str]:
    """The location class of each 26-connected lesion of ``mask``, in label order (as lesion_detection numbers them)."""
    from deepwml.inference.lesion_report import locate_mask

    return [str(v) for v in locate_mask(mask, geometry, anatomy).location]


def detection_by_location(lesions: pd.DataFrame, without_map: List[str]) -> Dict[str, Any]:
    """Per location class, pooled over the lesions of the cases with a map: reference lesions found, predicted lesions
    false."""
    located = lesions[lesions["location"] != ""]
    is_ref = located["side"] == "reference"
    rows = [detection_row(name, located[is_ref & (located["location"] == name)], located[~is_ref & (located["location"] == name)])
            for name in LOCATION_ORDER]
    return {"locations": rows, "overall": detection_row("all", located[is_ref], located[~is_ref]), "cases_without_map": without_map}


def location_table(by_location: Dict[str, Any]) -> Table:
    """The report's table: a row per location class and one for all located lesions."""
    note = ("Each lesion located with its case's anatomy map by deepwml_predict's rules (docs/prediction.md, 'Lesion "
            "location, McDonald regions and Fazekas'); reference and predicted lesions alike; pooled over cases. Found / "
            "false as in the size table.")
    if by_location["cases_without_map"]:
        note += f" Cases without an anatomy map, left out: {', '.join(by_location['cases_without_map'][:10])}."
    return detection_table("Lesion detection by location", "Location", by_location["locations"] + [by_location["overall"]],
                           note, "lesion-locations")
