"""Read a raw case: the image and, when there is one, its label on the very same grid with only allowed values."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from deepwml.imageio import Image, read_image, read_label
from deepwml.utils.errors import DatasetError


def read_case(image_path: Path, label_path: Optional[Path], ignore_value: Optional[int] = None,
              num_classes: int = 2) -> Tuple[Image, Optional[Image]]:
    """(image, label or None); a label on another grid or with values besides 0 .. ``num_classes`` - 1 (0, 1 for a
    lesion dataset) and ``ignore_value`` names the label file."""
    image = read_image(image_path)
    if label_path is None:
        return image, None
    label = read_label(label_path)
    mismatch = image.geometry.mismatches(label.geometry)
    if mismatch:
        raise DatasetError(f"label is not on the image's grid: {'; '.join(mismatch)}", label_path)
    allowed = list(range(num_classes)) + ([] if ignore_value is None else [ignore_value])
    # checked on reading, so the fingerprint refuses the case before any plan or cache is written
    bad = np.unique(label.array[~np.isin(label.array, allowed)])
    if bad.size:
        shown = ", ".join(str(int(v)) for v in bad[:5]) + (", ..." if bad.size > 5 else "")
        raise DatasetError(f"label values {shown} are not {' or '.join(map(str, allowed))} (dataset.json labels; "
                           "declare an ignore value there if the label marks unscored voxels)", label_path)
    return image, label


def read_channels(first: Image, paths: Sequence[Path]) -> List[Image]:
    """``first`` (channel 0, already read) and channels 1.. from ``paths[1:]``, each checked to lie on channel 0's grid."""
    # imported here: transforms imports the plan, which reading must not need for single-channel data
    from deepwml.preprocessing.transforms import check_channel_grids

    images = [first]
    for channel, path in enumerate(paths[1:], start=1):
        if not Path(path).exists():
            raise DatasetError(f"channel {channel} image file is missing (a case with several channels needs "
                               f"{', '.join(Path(p).name for p in paths)})", path)
        images.append(read_image(path))
    check_channel_grids(images)
    return images
