"""Read a raw case: the image and, when there is one, its label on the very same grid."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple

from deepwml.imageio import Image, read_image, read_label
from deepwml.utils.errors import DatasetError


def read_case(image_path: Path, label_path: Optional[Path]) -> Tuple[Image, Optional[Image]]:
    """(image, label or None); a label on another grid is an error naming the label file."""
    image = read_image(image_path)
    if label_path is None:
        return image, None
    label = read_label(label_path)
    mismatch = image.geometry.mismatches(label.geometry)
    if mismatch:
        raise DatasetError(f"label is not on the image's grid: {'; '.join(mismatch)}", label_path)
    return image, label
