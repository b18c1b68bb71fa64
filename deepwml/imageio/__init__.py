"""Image input and output with full geometry (SimpleITK), and validation errors that name the file."""
from deepwml.imageio.dicom import is_dicom_folder, list_dicom_series, read_dicom_series
from deepwml.imageio.files import (
    Image,
    has_image_ending,
    is_image_file,
    read_geometry,
    read_image,
    read_label,
    read_sitk,
    split_ending,
    unreadable_reason,
    write_image,
)
from deepwml.imageio.geometry import Geometry

__all__ = [
    "Geometry",
    "Image",
    "has_image_ending",
    "is_dicom_folder",
    "is_image_file",
    "list_dicom_series",
    "read_dicom_series",
    "read_geometry",
    "read_image",
    "read_label",
    "read_sitk",
    "split_ending",
    "unreadable_reason",
    "write_image",
]
