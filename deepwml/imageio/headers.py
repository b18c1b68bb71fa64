"""Implausible headers are errors: ITK silently turns a zero or NaN spacing into 1 mm, drops shear and takes the
absolute value of a negative spacing (flipping an axis), so the stored header fields are checked before ITK reads
them and the geometry ITK returns is compared with the one the header describes.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from deepwml.imageio.geometry import Geometry
from deepwml.imageio.nifti_header import read_nifti_header
from deepwml.utils.errors import ImageError

#: largest |DᵀD - I| entry accepted as orthonormal (float32 headers round direction cosines at ~1e-7)
ORTHO_TOL = 1e-4
#: relative tolerance between the header's affine and the geometry ITK reads (scaled by the voxel size / origin)
AFFINE_RTOL = 1e-4
_AXES = ("x (i)", "y (j)", "z (k)")
_RESAMPLE = "which DeepWML cannot write back exactly; resample to an orthogonal grid first"
#: MetaImage and NRRD headers are text; nothing sane is longer than this
_MAX_TEXT_HEADER = 1 << 16


def check_header_fields(path: Path) -> Optional[np.ndarray]:
    """Check the stored header fields ITK would silently 'repair'; for NIfTI return the RAS affine it describes."""
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return _nifti_affine(path)
    if name.endswith((".mha", ".mhd")):
        _check_metaimage(path)
    elif name.endswith((".nrrd", ".nhdr")):
        _check_nrrd(path)
    return None


def check_geometry(geometry: Geometry, path: Path, header_affine: Optional[np.ndarray] = None) -> None:
    """Spacing finite and > 0, origin and direction finite, direction orthonormal; equal to ``header_affine`` if given."""
    _check_spacing(geometry.spacing, path, "voxel spacing")
    if not np.all(np.isfinite(geometry.origin)):
        raise ImageError(f"origin {_fmt(geometry.origin)} is not finite", path)
    _check_direction(geometry.direction_matrix, path, "the direction matrix")
    if header_affine is not None:
        _compare_with_header(geometry, header_affine, path)


def itk_ras_affine(geometry: Geometry) -> np.ndarray:
    """The 4×4 NIfTI (RAS) affine of an ITK (LPS) geometry."""
    affine = np.eye(4)
    lps_to_ras = np.diag([-1.0, -1.0, 1.0])
    affine[:3, :3] = lps_to_ras @ geometry.direction_matrix @ np.diag(geometry.spacing)
    affine[:3, 3] = lps_to_ras @ np.asarray(geometry.origin)
    return affine


def _check_spacing(spacing: Sequence[float], path: Path, what: str) -> None:
    """Every spacing finite and > 0; the message names the axis and the value."""
    for axis, value in enumerate(spacing[:3]):
        if not (np.isfinite(value) and value > 0):
            raise ImageError(
                f"{what} along {_AXES[axis]} is {float(value):g} (all: {_fmt(spacing[:3])}); a voxel size must be finite and > 0",
                path,
            )


def _check_direction(matrix: np.ndarray, path: Path, what: str, columns_scaled: bool = False) -> None:
    """Finite, non-singular and orthogonal axes (columns); ``columns_scaled``: columns carry the voxel size."""
    if not np.all(np.isfinite(matrix)):
        raise ImageError(f"{what} {_fmt(matrix.ravel())} is not finite", path)
    norms = np.linalg.norm(matrix, axis=0)
    if np.any(norms == 0) or abs(np.linalg.det(matrix / np.where(norms == 0, 1, norms))) < 1e-6:
        raise ImageError(f"{what} {_fmt(matrix.ravel())} is singular (an axis has no direction)", path)
    unit = matrix / norms
    gram = unit.T @ unit
    if np.abs(gram - np.eye(3)).max() > ORTHO_TOL:
        angle = float(np.degrees(np.arccos(np.clip(np.abs(gram[~np.eye(3, dtype=bool)]).max(), 0, 1))))
        raise ImageError(
            f"{what} has shear/non-orthogonal axes (two axes {angle:.2f}° apart instead of 90°), {_RESAMPLE}",
            path,
        )
    if not columns_scaled and np.abs(norms - 1).max() > ORTHO_TOL:
        raise ImageError(f"{what} {_fmt(matrix.ravel())} has axes that are not unit vectors, {_RESAMPLE}", path)


def _nifti_affine(path: Path) -> Optional[np.ndarray]:
    """Raw pixdim (unrepaired) > 0 and finite; the sform (else qform) affine, orthogonal and finite."""
    # the fields as stored: nibabel's or ITK's own loader would quietly set a zero pixdim to 1
    header = read_nifti_header(path)
    pixdim = [float(v) for v in header.pixdim[1:4]]
    for axis, value in enumerate(pixdim):
        if not (np.isfinite(value) and value > 0):
            raise ImageError(
                f"header pixdim[{axis + 1}] (voxel spacing along {_AXES[axis]}) is {value:g}; a voxel size must be "
                f"finite and > 0 (ITK would silently read {abs(value) if np.isfinite(value) and value else 1.0:g} mm)",
                path,
            )
    sform_code, qform_code = header.sform_code, header.qform_code
    if sform_code <= 0 and qform_code <= 0:
        return None  # no world geometry stored: nothing to reproduce
    form = "sform" if sform_code > 0 else "qform"
    affine = header.sform() if sform_code > 0 else header.qform()
    if not np.all(np.isfinite(affine)):
        raise ImageError(f"the header's {form} {_fmt(affine[:3].ravel())} is not finite", path)
    _check_direction(affine[:3, :3], path, f"the header's {form} affine", columns_scaled=True)
    voxel = np.linalg.norm(affine[:3, :3], axis=0)
    if not np.allclose(voxel, pixdim, rtol=AFFINE_RTOL * 10, atol=0):
        raise ImageError(
            f"the header's pixdim spacing {_fmt(pixdim)} disagrees with its {form} voxel size {_fmt(voxel)}; "
            "ITK would take pixdim, so the image would be read at the wrong size; fix the header",
            path,
        )
    # in the header's unit; ITK reads metres and microns into millimetres
    affine[:3] *= header.mm_per_unit
    return affine


def _compare_with_header(geometry: Geometry, affine: np.ndarray, path: Path) -> None:
    """ITK's geometry must reproduce the header's affine (it may prefer the qform or repair fields silently)."""
    itk = itk_ras_affine(geometry)
    scale = max(1.0, float(np.abs(affine[:3, 3]).max()))
    linear_ok = np.allclose(itk[:3, :3], affine[:3, :3], rtol=0, atol=AFFINE_RTOL * float(np.abs(affine[:3, :3]).max()))
    origin_ok = np.allclose(itk[:3, 3], affine[:3, 3], rtol=0, atol=AFFINE_RTOL * scale)
    if not (linear_ok and origin_ok):
        raise ImageError(
            f"ITK reads a geometry (affine {_fmt(itk[:3].ravel())}) other than the header's "
            f"{_fmt(affine[:3].ravel())} (sform and qform disagree, or the sform cannot be decomposed), {_RESAMPLE}",
            path,
        )


def _check_metaimage(path: Path) -> None:
    """ElementSpacing > 0 and finite, Offset finite, TransformMatrix finite, non-singular and orthogonal."""
    fields = _text_fields(path, r"^\s*(\w+)\s*=\s*(.*?)\s*$", stop="ElementDataFile")
    spacing = _floats(fields.get("ElementSpacing"), path, "ElementSpacing")
    if spacing:
        _check_spacing(spacing, path, "header ElementSpacing")
    for key in ("Offset", "Origin", "Position"):
        values = _floats(fields.get(key), path, key)
        if values and not np.all(np.isfinite(values)):
            raise ImageError(f"header {key} {_fmt(values)} is not finite", path)
    for key in ("TransformMatrix", "Rotation", "Orientation"):
        values = _floats(fields.get(key), path, key)
        if len(values) >= 9:
            n = int(round(np.sqrt(len(values))))
            # MetaImage stores the matrix row by row with each row an index axis; columns below are the axes
            _check_direction(np.asarray(values).reshape(n, n)[:3, :3].T, path, f"the header's {key}")


def _check_nrrd(path: Path) -> None:
    """Space directions non-zero and finite (their lengths are the spacings), spacings > 0, space origin finite."""
    fields = _text_fields(path, r"^([^:#][^:]*?):=?\s*(.*?)\s*$", stop="")
    directions = fields.get("space directions")
    if directions is not None:
        vectors = [v for v in re.findall(r"\(([^)]*)\)", directions)]
        rows = [_floats(v.replace(",", " "), path, "space directions") for v in vectors]
        if len(rows) >= 3 and all(len(r) == len(rows[0]) for r in rows):
            matrix = np.asarray(rows[:3], dtype=float).T
            if not np.all(np.isfinite(matrix)):
                raise ImageError(f"header space directions {directions} are not finite", path)
            _check_spacing(list(np.linalg.norm(matrix, axis=0)), path, "header space directions length")
            _check_direction(matrix, path, "the header's space directions", columns_scaled=True)
    spacings = _floats(fields.get("spacings"), path, "spacings")
    if spacings:
        _check_spacing(spacings, path, "header spacings")
    origin = fields.get("space origin")
    if origin is not None:
        values = _floats(origin.strip("() ").replace(",", " "), path, "space origin")
        if not np.all(np.isfinite(values)):
            raise ImageError(f"header space origin {origin} is not finite", path)


def _text_fields(path: Path, pattern: str, stop: str) -> dict:
    """Key → value of a text header; reading stops at the line starting with ``stop`` ('' = the first blank line)."""
    with open(path, "rb") as f:
        head = f.read(_MAX_TEXT_HEADER).decode("latin-1")
    fields = {}
    for line in head.splitlines():
        if (stop and line.strip().startswith(stop)) or (not stop and not line.strip()):
            break
        m = re.match(pattern, line)
        if m:
            fields.setdefault(m.group(1).strip(), m.group(2))
    return fields


def _floats(text: Optional[str], path: Path, key: str) -> List[float]:
    """Whitespace-separated numbers ('nan' and 'inf' included); anything else is an error naming the field."""
    if not text:
        return []
    try:
        return [float(t) for t in text.split()]
    except ValueError:
        raise ImageError(f"header field {key} = {text[:80]!r} is not a list of numbers", path) from None


def _fmt(values) -> str:
    return "(" + ", ".join(f"{float(v):.4g}" for v in values) + ")"


def check_dicom_slices(files: Sequence[str], folder: Path) -> None:
    """Pixel Spacing > 0 and finite, finite positions/orientation, distinct and evenly spaced slice positions."""
    import SimpleITK as sitk

    positions, normal, orientations = [], None, []
    for name in files:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(name))
        reader.LoadPrivateTagsOff()
        try:
            reader.ReadImageInformation()
        except RuntimeError:
            continue  # the series reader reports unreadable files itself
        where = f"{Path(name).name}: "
        tags = {key: _dicom_numbers(reader, key, folder, where) for key in ("0028|0030", "0020|0032", "0020|0037")}
        if tags["0028|0030"] is not None:
            _check_spacing(tags["0028|0030"][::-1], folder, where + "Pixel Spacing (0028,0030)")
        orientation, position = tags["0020|0037"], tags["0020|0032"]
        if orientation is None or position is None or len(orientation) != 6 or len(position) != 3:
            return  # no patient geometry: ITK's own defaults stand, nothing to compare
        if not (np.all(np.isfinite(orientation)) and np.all(np.isfinite(position))):
            raise ImageError(f"{where}Image Position/Orientation (Patient) {_fmt(position)} {_fmt(orientation)} is not finite", folder)
        normal = np.cross(orientation[:3], orientation[3:])
        positions.append(np.asarray(position))
        orientations.append(orientation)
    if normal is None or len(positions) < 2:
        return
    tilted = int(np.count_nonzero(np.any(np.abs(np.asarray(orientations) - orientations[0]) > 1e-3, axis=1)))
    if tilted:
        raise ImageError(f"{tilted} of the series' {len(orientations)} slices lie in another orientation than the first "
                         "(a localiser or a reformat in the same series?); a stack needs one orientation", folder)
    check_slice_positions(np.asarray(positions), normal, folder)


def check_slice_positions(positions: np.ndarray, normal: np.ndarray, folder: Path,
                          repeat_hint: str = "does the folder hold two acquisitions?") -> None:
    """Slice (or frame) positions distinct and evenly spaced along the slice normal."""
    along = np.sort(np.asarray(positions, dtype=float) @ normal)
    gaps = np.diff(along)
    if gaps.min() <= 1e-3:
        raise ImageError(
            f"{np.count_nonzero(gaps <= 1e-3)} of {len(along)} slices repeat another slice's position along the slice "
            f"normal: the slice spacing would be 0 (ITK would silently use 1 mm); {repeat_hint}",
            folder,
        )
    if gaps.max() - gaps.min() > 0.05 * float(np.median(gaps)):
        raise ImageError(
            f"slice positions are not evenly spaced (gaps {gaps.min():.3g} to {gaps.max():.3g} mm): a missing or extra "
            "slice would put every slice after it at the wrong place",
            folder,
        )


def _dicom_numbers(reader, key: str, folder: Path, where: str) -> Optional[np.ndarray]:
    """A backslash-separated numeric DICOM tag, or None when absent."""
    if not reader.HasMetaDataKey(key):
        return None
    text = reader.GetMetaData(key).strip()
    try:
        return np.asarray([float(t) for t in text.split("\\")], dtype=float)
    except ValueError:
        raise ImageError(f"{where}DICOM tag ({key.replace('|', ',')}) = {text[:60]!r} is not a list of numbers", folder) from None
