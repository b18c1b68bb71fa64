"""A training label kept as a DICOM SEG beside its DICOM series (a reader's outlines from a viewer or PACS), written
as a mask on the series' grid when the raw dataset is made."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from deepwml.imageio import read_image, write_image
from deepwml.imageio.dicom_seg_masks import read_seg_mask
from deepwml.utils.errors import ImageError


@dataclass(frozen=True)
class DicomSegLabel:
    """The lesion segments of ``seg`` on the series read from ``series_folder`` (a LabelSource)."""

    seg: Path
    series_folder: Path
    series_uid: Optional[str] = None

    def key(self) -> str:
        """The SEG's path, size and time and the series chosen: a change to either redoes the label."""
        stat = self.seg.stat()
        return f"dicom-seg:{self.seg.resolve()}:{stat.st_size}:{stat.st_mtime_ns}:{self.series_folder.resolve()}:{self.series_uid}"

    def write(self, target: Path) -> None:
        """Place the SEG's frames on the series' slices and write the uint8 mask on its grid."""
        image = read_image(self.series_folder, series_uid=self.series_uid)
        mask = read_seg_mask(self.seg, self.series_folder, self.series_uid)
        if mask.shape != image.array.shape:
            raise ImageError(f"the SEG's mask {mask.shape} does not match its series {image.array.shape}", self.seg)
        write_image(mask, image.geometry, target)
