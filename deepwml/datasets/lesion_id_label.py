"""A training label kept as a lesion-id map (deepwml_predict --save-lesion-ids, corrected in a viewer: false lesions
cleared, missed ones painted with any label), written as a 0/1 mask when the raw dataset is made."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepwml.imageio import read_image, write_image
from deepwml.utils.errors import ImageError


@dataclass(frozen=True)
class LesionIdLabel:
    """Every voxel of ``path`` above 0 is lesion (a LabelSource)."""

    path: Path

    def key(self) -> str:
        """The map's path, size and time: an edit redoes the mask."""
        stat = self.path.stat()
        return f"lesion-ids:{self.path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"

    def write(self, target: Path) -> None:
        """Write the uint8 mask (label > 0) on the map's own grid."""
        image = read_image(self.path, dtype=None)
        values = np.asarray(image.array)
        if not np.all(np.isfinite(values)) or values.min() < 0 or not np.array_equal(values, np.round(values)):
            raise ImageError("is not a lesion-id map: its values must be whole numbers, 0 for background "
                             "(a probability map or an image given as a mask?)", self.path)
        write_image((values > 0).astype(np.uint8), image.geometry, target)
