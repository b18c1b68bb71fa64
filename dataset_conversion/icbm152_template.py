"""Build the brain template the synthetic generator draws real anatomy from (deepwml/synthetic/template/).

Source: the grey- and white-matter probability maps of the ICBM 2009a nonlinear symmetric template (1 mm), as the
nilearn wheel ships them (``nilearn/datasets/data/mni_icbm152_{gm,wm}_tal_nlin_sym_09a_converted.nii.gz``). The
output holds, in anatomy axes (array z y x = superior, posterior, patient-left; 1 mm), cropped to the head:

- ``gm``, ``wm``: the probability maps, uint8 0..255;
- ``envelope``: the brain with its sulci closed (4 mm), holes filled: what the generator calls the brain;
- ``ventricle``: the lateral and third ventricles (CSF > 0.5, more than 8 mm inside the envelope, the component
  at the ventricle bodies), grown by one voxel into CSF > 0.3;
- ``infratentorial``: cerebellum and brainstem below an approximate tentorium;
- ``origin``, ``spacing``: where voxel (0, 0, 0) sits and how large a voxel is in anatomy millimetres at head size 1,
  scaled so that the cerebrum has the size of the procedural one (deepwml.synthetic.anatomy).

Usage::

    pip download nilearn==0.14.1 --no-deps -d /tmp/nl
    python -m dataset_conversion.icbm152_template /tmp/nl/nilearn-0.14.1-py3-none-any.whl
"""
from __future__ import annotations

import argparse
import io
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Dict, Tuple

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from deepwml.utils.errors import DeepWMLError

OUTPUT = Path(__file__).resolve().parents[1] / "deepwml" / "synthetic" / "template" / "icbm152_2009a.npz"
_MEMBER = "nilearn/datasets/data/mni_icbm152_{}_tal_nlin_sym_09a_converted.nii.gz"
#: length (mm, front to back) and centre (X Y Z mm) of the procedural cerebrum at head size 1 that the template is
#: scaled and shifted to
CEREBRUM_LENGTH_MM = 166.0
CEREBRUM_CENTRE = (0.0, 1.0, 9.0)
#: a point inside each lateral ventricle body (anatomy mm of the unscaled template, X Y Z)
_VENTRICLE_SEEDS = ((-6.0, 0.0, 18.0), (6.0, 0.0, 18.0))


def _read_map(source: Path, name: str) -> Tuple[np.ndarray, Tuple[float, float, float]]:
    """One probability map (0..1, array in anatomy axes) and its LPS origin, from the wheel or a folder."""
    member = _MEMBER.format(name)
    try:
        if source.is_dir():
            image = sitk.ReadImage(str(source / member))
        else:
            with zipfile.ZipFile(source) as wheel, tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, "map.nii.gz")
                with open(path, "wb") as out:
                    out.write(wheel.read(member))
                image = sitk.ReadImage(path)
    except (OSError, KeyError, RuntimeError, zipfile.BadZipFile) as exc:
        raise DeepWMLError(f"{source}: cannot read {member}: {exc}") from exc
    if image.GetDirection() != (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0) or image.GetSpacing() != (1.0, 1.0, 1.0):
        raise DeepWMLError(f"{source}: {member} is not the 1 mm LPS-ordered map this script expects")
    # ITK's physical frame is LPS: x grows to the patient's left, y posteriorly; the array's x and y run the other way
    values = sitk.GetArrayFromImage(image)[:, ::-1, ::-1].astype(np.float32) / 255.0
    return values, image.GetOrigin()


def _ball(radius: int) -> np.ndarray:
    """A digital ball of ``radius`` voxels."""
    grid = np.indices((2 * radius + 1,) * 3) - radius
    return (grid**2).sum(axis=0) <= radius * radius


def build(source: Path) -> Dict[str, np.ndarray]:
    """The template arrays (see the module docstring) from the nilearn wheel or an unpacked folder."""
    gm, origin = _read_map(source, "gm")
    wm, _ = _read_map(source, "wm")
    nz, ny, nx = gm.shape
    # anatomy mm (unscaled) of voxel 0 along each axis: X = LPS x, Y = LPS y, Z = LPS z
    first = np.array([origin[2], origin[1] - (ny - 1), origin[0] - (nx - 1)])  # z y x
    tissue = gm + wm
    envelope = ndimage.binary_fill_holes(ndimage.binary_closing(tissue > 0.5, _ball(4)))
    depth = ndimage.distance_transform_edt(envelope)
    csf = np.clip(1.0 - tissue, 0.0, 1.0) * envelope
    labels, _ = ndimage.label((csf > 0.5) & (depth > 8))
    seeds = {int(labels[tuple(np.round(np.array(p[::-1]) - first).astype(int))]) for p in _VENTRICLE_SEEDS}
    seeds.discard(0)
    if not seeds:
        raise DeepWMLError(f"{source}: no ventricles found at the seed points; is this the ICBM 2009a template?")
    ventricle = np.isin(labels, sorted(seeds))
    ventricle |= ndimage.binary_dilation(ventricle) & (csf > 0.3) & (depth > 6)
    z, y, x = (first[i] + np.arange(n, dtype=np.float32).reshape([-1 if j == i else 1 for j in range(3)]) for i, n in enumerate(gm.shape))
    # the tentorium rises from the occipital bone to its apex behind the midbrain and slopes down laterally
    tentorium = -2.0 - 0.25 * np.clip(y - 45.0, 0.0, None) - 0.15 * np.abs(x)
    infratentorial = envelope & (((z < tentorium) & (y > 38.0)) | ((np.abs(x) < 16.0) & (y > 8.0) & (z < -12.0)))
    # crop to the envelope, two voxels to spare
    box = tuple(slice(max(0, int(i.min()) - 2), int(i.max()) + 3) for i in np.nonzero(envelope))
    supra = envelope & ~infratentorial
    ys = np.nonzero(supra.any(axis=(0, 2)))[0]
    zs = np.nonzero(supra.any(axis=(1, 2)))[0]
    scale = CEREBRUM_LENGTH_MM / float(ys[-1] - ys[0] + 1)
    centre_zyx = np.array([0.5 * (zs[0] + zs[-1]) + first[0], 0.5 * (ys[0] + ys[-1]) + first[1], first[2] + 0.5 * (nx - 1)])
    start = first + np.array([s.start for s in box])
    target = np.array(CEREBRUM_CENTRE[::-1])
    to_u8 = lambda a: np.round(np.clip(a, 0.0, 1.0) * 255.0).astype(np.uint8)  # noqa: E731
    return {
        "gm": to_u8(gm[box]),
        "wm": to_u8(wm[box]),
        "envelope": envelope[box].astype(np.uint8),
        "ventricle": ventricle[box].astype(np.uint8),
        "infratentorial": infratentorial[box].astype(np.uint8),
        "origin": ((start - centre_zyx) * scale + target).astype(np.float64),
        "spacing": np.float64(scale),
    }


def write(arrays: Dict[str, np.ndarray], out: Path) -> None:
    """Write the template npz atomically."""
    out.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    tmp = out.with_suffix(".tmp")
    tmp.write_bytes(buffer.getvalue())
    os.replace(tmp, out)


def main() -> None:
    """Command line: build the template from a nilearn wheel or its unpacked folder."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="nilearn wheel (.whl) or the folder it was unpacked into")
    parser.add_argument("-o", "--output", type=Path, default=OUTPUT)
    args = parser.parse_args()
    arrays = build(args.source)
    write(arrays, args.output)
    print(f"wrote {args.output} ({args.output.stat().st_size / 1e6:.1f} MB), grid {arrays['gm'].shape}, "
          f"{float(arrays['spacing']):.3f} mm per voxel at head size 1")


if __name__ == "__main__":
    main()
