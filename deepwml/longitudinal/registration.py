"""Rigid 3D registration of a baseline FLAIR onto its follow-up (Mattes mutual information, SimpleITK).

Two routine 2D FLAIRs of one patient differ by head position, slice positions and often slice thickness, so the
images are compared in millimetres, never slice by slice. Both are binned to about 2 mm in-plane before the
optimisation (the slices are kept): the head's outline and the ventricles carry the alignment, and the cost falls
twenty-fold on a 512² scan. The result maps follow-up world points to baseline world points, as ITK's transforms do.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np
import SimpleITK as sitk

from deepwml.imageio import Geometry
from deepwml.utils.errors import DeepWMLError

#: in-plane spacing (mm) the images are binned to for the optimisation
REGISTRATION_INPLANE_MM = 2.0
#: share of the follow-up's voxels the metric samples (a fixed random draw, so runs repeat)
SAMPLING_SHARE = 0.25
#: a registration whose aligned intensities correlate less than this inside the head is reported as doubtful: the
#: development heads moved and re-sliced at another thickness measure 0.95-0.98 (benchmarks/longitudinal.py)
MIN_CORRELATION = 0.6


@dataclass(frozen=True)
class RigidTransform:
    """``baseline = matrix @ followup + translation`` for world points (mm, LPS) of the follow-up and the baseline."""

    matrix: np.ndarray
    translation: np.ndarray

    def followup_to_baseline(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) follow-up world points to baseline world points."""
        return np.asarray(points, float) @ self.matrix.T + self.translation

    def baseline_to_followup(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) baseline world points to follow-up world points (the inverse; the matrix is a rotation)."""
        return (np.asarray(points, float) - self.translation) @ self.matrix

    @property
    def rotation_deg(self) -> float:
        """Angle of the rotation, in degrees."""
        cos = (np.trace(self.matrix) - 1.0) / 2.0
        return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))

    def to_dict(self) -> Dict[str, List]:
        """JSON-ready form."""
        return {"matrix": self.matrix.round(6).tolist(), "translation_mm": self.translation.round(4).tolist()}

    @classmethod
    def identity(cls) -> "RigidTransform":
        """No movement: the two scans already share world coordinates."""
        return cls(np.eye(3), np.zeros(3))


@dataclass(frozen=True)
class Registration:
    """A rigid registration and how well it aligned the two scans."""

    transform: RigidTransform
    #: Pearson correlation of the follow-up and the aligned baseline inside the follow-up's head
    correlation: float
    metric: float
    iterations: int
    seconds: float
    #: the baseline on the follow-up's grid (linear) that the correlation was measured on, for reuse
    aligned: Optional[np.ndarray] = field(default=None, repr=False, compare=False)

    @property
    def doubtful(self) -> bool:
        """True when the aligned scans agree too little for the lesion comparison to be trusted."""
        return not self.correlation >= MIN_CORRELATION

    def to_dict(self) -> Dict[str, object]:
        """JSON-ready form."""
        return {**self.transform.to_dict(), "rotation_deg": round(self.transform.rotation_deg, 3),
                "correlation": round(self.correlation, 4), "mattes_mutual_information": round(self.metric, 5),
                "iterations": self.iterations, "seconds": round(self.seconds, 2), "doubtful": self.doubtful}


def to_sitk(array: np.ndarray, geometry: Geometry) -> sitk.Image:
    """A float32 SimpleITK image of a (z, y, x) array on ``geometry``."""
    image = sitk.GetImageFromArray(np.asarray(array, dtype=np.float32))
    geometry.apply_to(image)
    return image


def binned(image: sitk.Image, geometry: Geometry, inplane_mm: float = REGISTRATION_INPLANE_MM) -> sitk.Image:
    """The image averaged over in-plane bins of about ``inplane_mm`` (slices untouched)."""
    factors = [1 if axis == geometry.slice_axis else max(1, int(round(inplane_mm / s)))
               for axis, s in enumerate(geometry.spacing)]
    return sitk.BinShrink(image, factors) if max(factors) > 1 else image


def register_rigid(followup: np.ndarray, followup_geometry: Geometry, baseline: np.ndarray, baseline_geometry: Geometry,
                   seed: int = 1) -> Registration:
    """Align the baseline to the follow-up (rigid, 6 parameters), starting from their intensity centres of mass.
    ``seed`` draws the metric's voxel sample; it must not be 0, which SimpleITK takes for 'seed from the clock'."""
    if seed == 0:
        raise ValueError("seed 0 would make SimpleITK sample from the clock; runs would not repeat")  # a bug
    start = time.perf_counter()
    fixed_full, moving_full = to_sitk(followup, followup_geometry), to_sitk(baseline, baseline_geometry)
    fixed, moving = binned(fixed_full, followup_geometry), binned(moving_full, baseline_geometry)
    try:
        initial = sitk.CenteredTransformInitializer(fixed, moving, sitk.Euler3DTransform(),
                                                    sitk.CenteredTransformInitializerFilter.MOMENTS)
    except RuntimeError as e:  # an all-zero image has no centre of mass
        raise DeepWMLError(f"cannot register the two scans: {str(e).strip().splitlines()[-1][:200]}") from None
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(SAMPLING_SHARE, seed)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(learningRate=2.0, minStep=1e-3, numberOfIterations=300,
                                                    relaxationFactor=0.6, gradientMagnitudeTolerance=1e-6)
    method.SetOptimizerScalesFromPhysicalShift()
    # coarse first: a head moved by a centimetre or rotated by 15 degrees still falls into the right optimum
    method.SetShrinkFactorsPerLevel([2, 1])
    method.SetSmoothingSigmasPerLevel([2.0, 0.0])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    method.SetInitialTransform(initial, inPlace=False)
    try:
        result = method.Execute(fixed, moving)
    except RuntimeError as e:
        raise DeepWMLError(f"cannot register the two scans: {str(e).strip().splitlines()[-1][:200]}") from None
    euler = sitk.Euler3DTransform(sitk.CompositeTransform(result).GetNthTransform(0)) \
        if result.GetName() == "CompositeTransform" else sitk.Euler3DTransform(result)
    matrix = np.asarray(euler.GetMatrix(), float).reshape(3, 3)
    centre, shift = np.asarray(euler.GetCenter(), float), np.asarray(euler.GetTranslation(), float)
    transform = RigidTransform(matrix, centre + shift - matrix @ centre)
    aligned = sitk.GetArrayFromImage(resample_to(moving_full, transform, followup_geometry, sitk.sitkLinear))
    return Registration(transform, aligned_correlation(np.asarray(followup, np.float32), aligned),
                        float(method.GetMetricValue()), int(method.GetOptimizerIteration()),
                        time.perf_counter() - start, aligned)


def resample_to(image: sitk.Image, transform: RigidTransform, geometry: Geometry, interpolator: int) -> sitk.Image:
    """``image`` (a baseline) on the follow-up grid ``geometry``, through ``transform``; 0 outside it."""
    affine = sitk.AffineTransform(3)
    affine.SetMatrix(transform.matrix.ravel().tolist())
    affine.SetTranslation(transform.translation.tolist())
    reference = sitk.Image(list(geometry.size), sitk.sitkUInt8)
    geometry.apply_to(reference)
    return sitk.Resample(image, reference, affine, interpolator, 0.0, image.GetPixelID())


def aligned_correlation(followup: np.ndarray, aligned: np.ndarray) -> float:
    """Pearson r of the two images over the follow-up's head (voxels above a tenth of its 99th percentile)."""
    head = followup > 0.1 * np.percentile(followup, 99)
    if head.sum() < 100:
        return float("nan")
    a, b = followup[head].astype(np.float64), aligned[head].astype(np.float64)
    a, b = a - a.mean(), b - b.mean()
    denominator = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denominator) if denominator > 0 else float("nan")
