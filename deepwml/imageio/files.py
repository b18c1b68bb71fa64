"""Read and write 3D images (NIfTI, MHA/MHD, NRRD; FreeSurfer MGH/MGZ) with their full geometry; every failure names
the file."""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple, Union

import numpy as np
import SimpleITK as sitk

from deepwml.constants import IMAGE_ENDINGS
from deepwml.imageio.geometry import Geometry
from deepwml.imageio.headers import check_geometry, check_header_fields
from deepwml.imageio.itk_nifti import itk_readable
from deepwml.imageio.mgh import is_mgh, read_mgh, read_mgh_geometry, write_mgh
from deepwml.imageio.nifti_header import check_nifti_voxels
from deepwml.utils.atomic import atomic_path, temp_prefix
from deepwml.utils.errors import ImageError

PathLike = Union[str, Path]


@dataclass
class Image:
    """A 3D image: voxels in numpy (z, y, x) order, as SimpleITK returns them, plus its geometry."""

    array: np.ndarray
    geometry: Geometry
    path: Optional[Path] = None


def split_ending(name: Union[str, Path]) -> Tuple[str, str]:
    """Split a file name into (stem, ending) for the endings DeepWML knows, e.g. 'a.nii.gz' -> ('a', '.nii.gz')."""
    name = Path(name).name
    for ending in sorted(IMAGE_ENDINGS, key=len, reverse=True):
        if name.lower().endswith(ending):
            return name[: -len(ending)], name[-len(ending):]
    raise ImageError(f"unknown image file ending; expected one of {', '.join(IMAGE_ENDINGS)}", name)


def is_image_file(path: PathLike) -> bool:
    """True for a file whose ending DeepWML reads."""
    path = Path(path)
    return path.is_file() and any(path.name.lower().endswith(e) for e in IMAGE_ENDINGS)


def has_image_ending(path: PathLike) -> bool:
    """True when the name ends with an image ending DeepWML reads, whatever the entry is (file, folder, broken link)."""
    return Path(path).name.lower().endswith(IMAGE_ENDINGS)


def unreadable_reason(path: PathLike) -> Optional[str]:
    """Why an entry named like an image cannot be one (broken link, folder, empty, no permission), or None.

    Folder listings use it so that such entries are reported by name instead of vanishing from the results.
    """
    path = Path(path)
    if path.is_symlink() and not path.exists():
        return f"is a dangling symbolic link (to {os.readlink(path)}, which does not exist)"
    if path.is_dir():
        return "is a folder, not an image file"
    if not path.exists():
        return "file not found"
    if not path.is_file():
        return "is not a regular file"
    if path.stat().st_size == 0:
        return "is empty (0 bytes)"
    if not os.access(path, os.R_OK):
        return "is not readable (permission denied)"
    return None


def _sitk_to_3d(image: sitk.Image, path: PathLike) -> sitk.Image:
    """Accept 3D images; squeeze a trailing singleton 4th axis; reject 2D, vectors and true 4D."""
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ImageError(
            f"has {image.GetNumberOfComponentsPerPixel()} components per voxel; expected a single-channel FLAIR", path
        )
    dim = image.GetDimension()
    if dim == 4:
        size = image.GetSize()
        if size[3] != 1:
            raise ImageError(f"is 4D with size {size}; expected one 3D stack of slices (split the volumes first)", path)
        image = sitk.Extract(image, list(size[:3]) + [0], [0, 0, 0, 0])
        dim = 3
    if dim == 2:
        raise ImageError(f"is 2D (size {image.GetSize()}); expected a 3D stack of slices", path)
    if dim != 3:
        raise ImageError(f"has {dim} dimensions; expected 3", path)
    return image


def read_geometry(path: PathLike) -> Geometry:
    """Read only the header of an image file and return its 3D geometry (fast: no voxel data)."""
    path = Path(path)
    reason = unreadable_reason(path)
    if reason:
        raise ImageError(reason, path)
    split_ending(path)  # rejects unknown endings with a clear message
    if is_mgh(path):
        geometry = read_mgh_geometry(path)
        check_geometry(geometry, path)
        return geometry
    header_affine = check_header_fields(path)
    reader = sitk.ImageFileReader()
    try:
        with itk_readable(path, voxels=False) as readable:
            reader.SetFileName(str(readable))
            reader.ReadImageInformation()
    except RuntimeError as e:
        raise ImageError(f"unreadable image header ({_first_line(e)})", path) from None
    dim = reader.GetDimension()
    size = reader.GetSize()
    if dim == 4 and size[3] == 1:
        geometry = Geometry(size[:3], reader.GetSpacing()[:3], reader.GetOrigin()[:3], _sub_direction(reader.GetDirection()))
    elif dim != 3:
        kind = "2D" if dim == 2 else f"{dim}D"
        raise ImageError(f"is {kind} (size {size}); expected a 3D stack of slices", path)
    else:
        geometry = Geometry.from_sitk(reader)
    check_geometry(geometry, path, header_affine)
    return geometry


def _sub_direction(direction4: Tuple[float, ...]) -> Tuple[float, ...]:
    d = np.asarray(direction4).reshape(4, 4)[:3, :3]
    return tuple(d.ravel())


def read_sitk(path: PathLike, series_uid: Optional[str] = None) -> sitk.Image:
    """Read a file or DICOM series folder as a 3D SimpleITK image, with clear errors."""
    path = Path(path)
    if path.is_dir():
        from deepwml.imageio.dicom import read_dicom_series

        return read_dicom_series(path, series_uid)
    reason = unreadable_reason(path)
    if reason:
        raise ImageError(reason, path)
    split_ending(path)  # rejects unknown endings with a clear message
    if is_mgh(path):  # ITK has no MGH reader
        array, geometry = read_mgh(path)
        check_geometry(geometry, path)
        image = sitk.GetImageFromArray(array)
        geometry.apply_to(image)
        return image
    # before ITK: it would silently repair a zero/NaN/negative spacing or fail with a cryptic message
    header_affine = check_header_fields(path)
    try:
        with itk_readable(path) as readable:
            image = sitk.ReadImage(str(readable))
    except RuntimeError as e:
        raise ImageError(f"unreadable or truncated image ({_first_line(e)})", path) from None
    image = _sitk_to_3d(image, path)
    check_geometry(Geometry.from_sitk(image), path, header_affine)
    if path.name.lower().endswith((".nii", ".nii.gz")):
        # ITK's NIfTI reader zero-fills a truncated file without a word
        check_nifti_voxels(path)
    return image


def read_image(path: PathLike, series_uid: Optional[str] = None, check_finite: bool = True, dtype=np.float32) -> Image:
    """Read a 3D image (file or DICOM series folder) into an :class:`Image`; NaN/Inf voxels are an error."""
    image = read_sitk(path, series_uid)
    array = sitk.GetArrayFromImage(image)
    if dtype is not None:
        array = array.astype(dtype, copy=False)
    if check_finite and np.issubdtype(array.dtype, np.floating):
        bad = ~np.isfinite(array)
        if bad.any():
            raise ImageError(f"contains {int(bad.sum())} NaN/Inf voxels", path)
    return Image(array, Geometry.from_sitk(image), Path(path))


#: what a mask holding fractions usually is, and what to do about it (read_label, the evaluator's masks)
INTERPOLATED_MASK_HINT = ("values between 0 and 1 come from interpolation (a mask resampled or registered with a linear "
                          "interpolator): threshold it at 0.5, or resample it with nearest neighbour")


def read_label(path: PathLike) -> Image:
    """Read a label map as integers; non-integer values are an error (the label would be ambiguous)."""
    image = read_image(path, dtype=None)
    array = image.array
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)):
            raise ImageError("label contains NaN/Inf", path)
        rounded = np.rint(array)
        if not np.array_equal(rounded, array):
            raise ImageError(f"label contains non-integer values; {INTERPOLATED_MASK_HINT}", path)
        array = rounded
    image.array = array.astype(np.int16, copy=False)
    return image


def write_image(array: np.ndarray, geometry: Geometry, path: PathLike, compress: bool = True) -> Path:
    """Write ``array`` (numpy z, y, x order) with ``geometry`` to ``path`` atomically; the ending picks the format."""
    path = Path(path)
    array = np.asarray(array)
    expected = tuple(reversed(geometry.size))
    if array.shape != expected:
        raise ImageError(f"array shape {array.shape} does not match geometry size {geometry.size} (z, y, x = {expected})", path)
    if array.dtype == bool:
        array = array.astype(np.uint8)
    _, ending = split_ending(path)
    if is_mgh(path):
        with atomic_path(path, ending) as tmp:
            write_mgh(array, geometry, path, tmp)
        return path
    image = sitk.GetImageFromArray(array)
    geometry.apply_to(image)
    if ending in (".mhd", ".nhdr"):
        _write_detached_header(image, path, compress)
    else:
        with atomic_path(path, ending) as tmp:
            sitk.WriteImage(image, str(tmp), compress)
    return path


def _write_detached_header(image: sitk.Image, path: Path, compress: bool) -> None:
    """Header + data file pairs: write both in a scratch folder, then move data first and header last."""
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=temp_prefix(path.name), suffix=".tmp", dir=path.parent))
    try:
        sitk.WriteImage(image, str(scratch / path.name), compress)
        header = scratch / path.name
        for f in scratch.iterdir():
            if f != header:
                os.replace(f, path.parent / f.name)
        os.replace(header, path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _first_line(e: Exception) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    # SimpleITK's messages start with file/line noise; the useful text is usually the last line
    return lines[-1][:200] if lines else type(e).__name__
