"""Each lesion under its own number (deepwml_predict --save-lesion-ids), for reading and editing in a viewer.

``CASE_lesionids<ending>`` holds, on the input's grid, every lesion voxel labelled with its ``lesion_id`` in
CASE_lesions.csv (the number the report's pictures print beside it); ``CASE_lesionids.txt`` names each label as an
ITK-SNAP label description file (load it with the map: "lesion 7: 0.41 ml, periventricular, confidence 0.62"), so a
reader can find a lesion of the table, hide it or clear it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import numpy as np

from deepwml.inference.lesion_report import lesion_id_labels

if TYPE_CHECKING:
    import pandas as pd

#: label colours, repeated in this order: 12 qualitative colours far from the grey of a FLAIR and from each other
PALETTE = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (170, 110, 40),
)

_HEADER = """\
# ITK-SNAP label description file written by DeepWML: one line per lesion of CASE_lesions.csv
# columns: label value, red, green, blue (0-255), opacity (0-1), visible, in the 3D mesh, "name"
"""


def lesion_id_map(mask: np.ndarray, slice_axis: int) -> np.ndarray:
    """The lesions of a (z, y, x) mask labelled with their lesion-table ids: uint16, or uint32 past 65535 lesions."""
    labels, count = lesion_id_labels(np.asarray(mask) > 0, slice_axis)
    return labels.astype(np.uint16 if count <= np.iinfo(np.uint16).max else np.uint32)


def lesion_ids_of(mask: np.ndarray, slice_axis: int, ids: Optional[np.ndarray] = None) -> np.ndarray:
    """``ids`` when the caller labelled the mask already (one labelling per case, shared by every picture and the
    SR), else :func:`lesion_id_map` of ``mask``."""
    if ids is None:
        return lesion_id_map(mask, slice_axis)
    if np.shape(ids) != np.shape(mask):
        raise ValueError(f"a lesion-id map of shape {np.shape(ids)} for a mask of {np.shape(mask)}")  # a bug, never a user error
    return ids


def lesion_name(row: "pd.Series") -> str:
    """A lesion's label name: its id and volume, then its location and confidence when the table has them."""
    parts = [f"lesion {int(row['lesion_id'])}: {float(row['volume_ml']):.3f} ml"]
    if isinstance(row.get("location"), str) and row["location"]:
        parts.append(str(row["location"]))
    if "confidence" in row and np.isfinite(row["confidence"]):
        parts.append(f"confidence {float(row['confidence']):.2f}")
    return ", ".join(parts)


def label_description(lesions: "pd.DataFrame") -> str:
    """The ITK-SNAP label description of a lesion table: background, then one visible label per lesion."""
    lines = [_HEADER.rstrip("\n"), f'{0:5d} {0:5d} {0:5d} {0:5d} {0:5g} {0:d} {0:d}    "background"']
    for k, (_, row) in enumerate(lesions.iterrows()):
        red, green, blue = PALETTE[k % len(PALETTE)]
        name = lesion_name(row).replace('"', "'")
        lines.append(f'{int(row["lesion_id"]):5d} {red:5d} {green:5d} {blue:5d} {1:5g} {1:d} {1:d}    "{name}"')
    return "\n".join(lines) + "\n"
