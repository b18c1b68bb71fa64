"""Where each lesion lies (periventricular, cortical, juxtacortical, infratentorial, deep white matter) and the
McDonald 2017 dissemination-in-space counts, from the lesion components and an anatomy label map on the same grid.

Distances are measured between voxel centres in mm on the scan's own grid, so thick slices count with their
thickness. A lesion touches a structure when a voxel of it lies within :data:`CONTACT_MM` of a voxel of the
structure. On a 2D FLAIR with 3-8 mm slices this means in-plane contact on the same slice: a lesion voxel above a
ventricle voxel on the next 6 mm slab may have millimetres of white matter between them, which McDonald 2017 /
MAGNIMS 2016 ("no white matter in between") do not allow; through-plane neighbours touch only on thin slices
(centres <= CONTACT_MM apart, e.g. a 1 mm 3D FLAIR). See docs/prediction.md.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
from scipy import ndimage

from deepwml.anatomy.labels import BRAIN_CLASSES, CORTEX, INFRATENTORIAL, VENTRICLE
from deepwml.imageio import Geometry
from deepwml.utils.errors import DeepWMLError

#: location classes, in the order a lesion is tested for them (the first that applies wins)
UNCLASSIFIED, INFRATENTORIAL_LOC, PERIVENTRICULAR, CORTICAL, JUXTACORTICAL, DEEP = (
    "unclassified", "infratentorial", "periventricular", "cortical", "juxtacortical", "deep",
)  # fmt: skip
LOCATIONS = (UNCLASSIFIED, INFRATENTORIAL_LOC, PERIVENTRICULAR, CORTICAL, JUXTACORTICAL, DEEP)
#: in-plane centre-to-centre distance (mm) that still counts as contact: a gap of white matter under about 1 mm
#: (e.g. one 0.5 mm pixel) is below the ~1 mm acquired in-plane resolution of a clinical FLAIR and the anatomy
#: map's own boundary error, so a reader would not see it either; a 0.9 mm pixel gap (1.9 mm) is not contact
CONTACT_MM = 1.5
#: distances to the ventricles and the cortex are exact up to this and reported as missing beyond it (the search
#: stays near each lesion, so the cost follows the lesions, not the image)
DISTANCE_MM = 5.0
#: how far a periventricular lesion's reach from the wall is measured (exact up to here, capped here); beyond it
#: (3D) the white matter is deep for the Fazekas deep grade
REACH_MM = 10.0
#: share of a lesion's parenchymal voxels in the infratentorial (cortex) class that makes it infratentorial (cortical)
MAJORITY = 0.5
#: the lesions whose volume the 10 mm rule splits: the supratentorial parenchyma's (infratentorial and unclassified
#: lesions have their own volumes; the fourth ventricle would otherwise make brainstem lesions periventricular)
SPLIT_CLASSES = (PERIVENTRICULAR, CORTICAL, JUXTACORTICAL, DEEP)
#: summary.csv columns of the 10 mm rule
NEAR_VENTRICLES_COLUMN, FAR_FROM_VENTRICLES_COLUMN = "volume_within_10mm_of_ventricles_ml", "volume_beyond_10mm_of_ventricles_ml"
SPLIT_COLUMNS = (NEAR_VENTRICLES_COLUMN, FAR_FROM_VENTRICLES_COLUMN)
#: MAGNIMS 2016: lesions shorter than 3 mm in their long axis are not counted for dissemination in space
DIS_MIN_LONG_AXIS_MM = 3.0
#: McDonald 2017 brain regions of dissemination in space and the location classes that count for each
DIS_REGIONS: Dict[str, Tuple[str, ...]] = {
    "periventricular": (PERIVENTRICULAR,),
    "cortical_juxtacortical": (CORTICAL, JUXTACORTICAL),
    "infratentorial": (INFRATENTORIAL_LOC,),
}


@dataclass
class LesionLocations:
    """Per lesion (index i = component label i + 1, as :func:`deepwml.inference.lesion_report.label_lesions` numbers them)."""

    location: np.ndarray
    #: nearest ventricle / cortex voxel (3D, centre to centre, mm); NaN when farther than :data:`DISTANCE_MM`
    ventricle_distance_mm: np.ndarray
    cortex_distance_mm: np.ndarray
    #: longest in-plane axis on any slice (mm), from the second moments of the lesion's pixels
    long_axis_mm: np.ndarray
    #: farthest in-plane reach from the ventricle on the same slice (mm; capped at REACH_MM; NaN: no ventricle near)
    wall_extent_mm: np.ndarray
    #: in-plane area (mm², summed over slices) of the voxels within REACH_MM in-plane of the ventricle on their slice
    near_wall_area_mm2: np.ndarray
    #: long axis (mm) of the largest part lying farther than REACH_MM (3D) from the ventricles; 0: none
    deep_part_long_axis_mm: np.ndarray
    #: the lesion's voxels, and those of them within REACH_MM (3D) of a ventricle voxel
    voxels: np.ndarray
    near_ventricle_voxels: np.ndarray

    def __len__(self) -> int:
        """Number of lesions."""
        return len(self.location)


def check_anatomy(anatomy: np.ndarray, shape: Tuple[int, ...]) -> np.ndarray:
    """The anatomy map as an integer array of the lesion mask's shape, or a DeepWMLError naming the mismatch."""
    anatomy = np.asarray(anatomy)
    if anatomy.shape != tuple(shape):
        raise DeepWMLError(f"anatomy map has shape {anatomy.shape} but the lesion mask has {tuple(shape)}: they must be on the same grid")
    if not np.issubdtype(anatomy.dtype, np.integer):
        raise DeepWMLError(f"anatomy map must hold integer class labels, got {anatomy.dtype}")
    return anatomy


def slice_first(array: np.ndarray, geometry: Geometry) -> np.ndarray:
    """A view with the slice axis first: (slice, u, v)."""
    return np.moveaxis(array, geometry.slice_axis_numpy, 0)


def grid_sampling(geometry: Geometry) -> Tuple[float, float, float]:
    """(thickness, du, dv) in mm for the (slice, u, v) view."""
    du, dv = geometry.in_plane_pixels.values()
    return float(geometry.slice_thickness), float(du), float(dv)


def inplane_distance(structure: np.ndarray, du: float, dv: float) -> np.ndarray:
    """In-plane distance (mm) from each voxel to the nearest ``structure`` voxel on the same slice; inf: none on it."""
    out = np.full(structure.shape, np.inf, np.float32)
    # slice by slice (a handful): a 2D transform of only the slices that hold the structure is several times
    # cheaper than one 3D transform that keeps slices apart with a huge through-plane spacing
    for k in np.flatnonzero(structure.any(axis=(1, 2))):
        out[k] = ndimage.distance_transform_edt(~structure[k], sampling=(du, dv))
    return out


def _long_axes(labels: np.ndarray, count: int, du: float, dv: float, voxels: Optional[Tuple[np.ndarray, ...]] = None) -> np.ndarray:
    """Longest in-plane axis (mm) per label over its slices: 4 sigma of the largest principal moment (a disk of
    radius r gives 2r), with each pixel's own extent added so that a single pixel measures one pixel. ``voxels``:
    ``np.nonzero(labels)`` when the caller has it."""
    s, u, v = np.nonzero(labels) if voxels is None else voxels
    if s.size == 0:
        return np.zeros(count)
    n_slices = labels.shape[0]
    key = labels[s, u, v].astype(np.int64) * n_slices + s
    size = (count + 1) * n_slices
    y, x = u * du, v * dv
    n = np.bincount(key, minlength=size).astype(float)
    sums = [np.bincount(key, weights=w, minlength=size) for w in (y, x, y * y, x * x, y * x)]
    with np.errstate(invalid="ignore", divide="ignore"):
        my, mx = sums[0] / n, sums[1] / n
        vy = sums[2] / n - my**2 + du**2 / 12.0
        vx = sums[3] / n - mx**2 + dv**2 / 12.0
        cxy = sums[4] / n - my * mx
    largest = 0.5 * (vy + vx) + np.sqrt(0.25 * (vy - vx) ** 2 + cxy**2)
    length = np.where(n > 0, 4.0 * np.sqrt(np.maximum(largest, 0.0)), 0.0)
    return length.reshape(count + 1, n_slices).max(axis=1)[1:]


def locate_lesions(labels: np.ndarray, count: int, offset: Tuple[int, ...], anatomy: np.ndarray, geometry: Geometry) -> LesionLocations:
    """Location of each labelled lesion; ``labels`` cover the box starting at ``offset`` (numpy order) of ``anatomy``.

    All lesions' voxels are handled together (no loop over lesions): the ventricle's distance field is read at each
    voxel, the cortex searched within DISTANCE_MM of each voxel on a lesion's in-plane edge, on the slices that close.
    The results are those of measuring each lesion in its own crop.
    """
    found = _Contacts(labels, count, offset, anatomy, geometry, DISTANCE_MM, REACH_MM)
    s, u, v = found.voxels
    thickness, du, dv = found.sampling
    location = found.classes()
    # one 3D distance per voxel serves the periventricular reach and the volumes by the 10 mm rule
    near = _distance_3d(found.ventricle.at, s, u, v, found.n_slices, thickness, REACH_MM) <= REACH_MM
    extent, area, deep = _wall_reach(location == PERIVENTRICULAR, found.ids - 1, found.voxels, found.ventricle,
                                     found.sampling, near)
    return LesionLocations(
        location=location,
        ventricle_distance_mm=np.where(found.closest[0] <= DISTANCE_MM, found.closest[0], np.nan),
        cortex_distance_mm=np.where(found.closest[1] <= DISTANCE_MM, found.closest[1], np.nan),
        long_axis_mm=_long_axes(found.box_labels, count, du, dv, found.local),
        wall_extent_mm=extent,
        near_wall_area_mm2=area,
        deep_part_long_axis_mm=deep,
        voxels=np.bincount(found.ids, minlength=count + 1)[1:],
        near_ventricle_voxels=np.bincount(found.ids, weights=near, minlength=count + 1)[1:].astype(np.int64),
    )


def lesion_classes(labels: np.ndarray, count: int, offset: Tuple[int, ...], anatomy: np.ndarray, geometry: Geometry,
                   ventricles: Optional["VentricleField"] = None) -> np.ndarray:
    """The location class of each labelled lesion, as :func:`locate_lesions` gives it, without the distances and
    reaches the lesion table reports: a class needs contact only, so the ventricles' field and the cortex are searched
    within CONTACT_MM instead of DISTANCE_MM and REACH_MM (a fraction of the lookups; the rules that judge lesions by
    their location, deepwml.inference.cortex_contrast, run at every threshold of a postprocessing search).
    ``ventricles``: :func:`contact_field` of the same map, made once for many calls (else made here)."""
    return _Contacts(labels, count, offset, anatomy, geometry, CONTACT_MM, CONTACT_MM, ventricles).classes()


def contact_field(anatomy: np.ndarray, geometry: Geometry) -> "VentricleField":
    """The ventricles' field :func:`lesion_classes` searches, which depends on the anatomy map alone."""
    return VentricleField(slice_first(anatomy, geometry), grid_sampling(geometry), CONTACT_MM)


class _Contacts:
    """What locates each labelled lesion: its voxels, the shares of its voxels in the parenchyma, the infratentorial
    class and the cortex, and its nearest ventricle and cortex voxel (3D, mm), exact up to ``reach`` (inf beyond);
    the ventricles' field reaches ``field_reach`` (REACH_MM for the wall reach of the lesion table)."""

    def __init__(self, labels: np.ndarray, count: int, offset: Tuple[int, ...], anatomy: np.ndarray, geometry: Geometry,
                 reach: float, field_reach: float, ventricles: Optional["VentricleField"] = None) -> None:
        thickness, du, dv = self.sampling = grid_sampling(geometry)
        self.count = count
        self.box_labels = slice_first(labels, geometry)
        box_start = np.array([offset[geometry.slice_axis_numpy]] + [o for i, o in enumerate(offset) if i != geometry.slice_axis_numpy])
        anat = slice_first(anatomy, geometry)
        self.n_slices = anat.shape[0]
        self.local = np.nonzero(self.box_labels)
        self.ids = ids = self.box_labels[self.local]
        self.voxels = s, u, v = tuple(c + int(b) for c, b in zip(self.local, box_start))
        classes = anat[s, u, v]
        parenchyma = np.bincount(ids, weights=np.isin(classes, BRAIN_CLASSES), minlength=count + 1)[1:]
        infra = np.bincount(ids, weights=classes == INFRATENTORIAL, minlength=count + 1)[1:]
        cortex_share = np.bincount(ids, weights=classes == CORTEX, minlength=count + 1)[1:]
        with np.errstate(invalid="ignore", divide="ignore"):
            self.parenchyma, self.infra, self.cortex_share = parenchyma, infra / parenchyma, cortex_share / parenchyma
        self.ventricle = ventricles if ventricles is not None else VentricleField(anat, self.sampling, field_reach)
        cortex = CortexNeighbourhood(anat, box_start, self.box_labels.shape, self.sampling, reach)
        interior = _inplane_interior(self.box_labels)[self.local]
        self.closest = np.full((2, count), np.inf)
        for j, field in enumerate((self.ventricle.at, partial(cortex.at, interior=interior))):
            np.minimum.at(self.closest[j], ids - 1, _distance_3d(field, s, u, v, self.n_slices, thickness, reach))

    def classes(self) -> np.ndarray:
        """Each lesion's location class, by the first rule of the priority order that applies."""
        touches = self.closest <= CONTACT_MM
        location = np.full(self.count, DEEP, dtype=object)
        rules = [
            (self.parenchyma == 0, UNCLASSIFIED),
            (self.infra >= MAJORITY, INFRATENTORIAL_LOC),
            (touches[0], PERIVENTRICULAR),
            (self.cortex_share >= MAJORITY, CORTICAL),
            (touches[1], JUXTACORTICAL),
        ]
        decided = np.zeros(self.count, bool)
        for hit, name in rules:
            take = hit & ~decided
            location[take] = name
            decided |= take
        return location


def _wall_reach(
    periventricular: np.ndarray, index: np.ndarray, voxels: Tuple[np.ndarray, ...], ventricle: "VentricleField",
    sampling: Tuple[float, float, float], near: np.ndarray,
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """How far each periventricular lesion reaches from the wall (NaN for the others): the farthest in-plane reach on
    slices that show the ventricle (capped at REACH_MM), the area within REACH_MM of it and the long axis of the
    largest part farther than REACH_MM (3D). ``index``: each voxel's lesion (0-based); ``near``: each voxel within
    REACH_MM (3D) of the ventricles."""
    count = len(periventricular)
    extent, area, deep = (np.full(count, np.nan) for _ in range(3))
    pick = periventricular[index]
    if not pick.any():
        return extent, area, deep
    _, du, dv = sampling
    (s, u, v), lesion = (c[pick] for c in voxels), index[pick]
    same = ventricle.at(s, u, v)
    # on a slice that shows the ventricle, a voxel beyond the field's reach is at least REACH_MM from it
    seen = ventricle.on_slice[s]
    same = np.where(seen & ~np.isfinite(same), REACH_MM, same)
    farthest = np.full(count, -np.inf, np.float32)
    np.maximum.at(farthest, lesion[seen], same[seen])
    has_seen = np.bincount(lesion[seen], minlength=count) > 0
    extent[periventricular] = np.where(has_seen, np.minimum(farthest, REACH_MM), np.nan)[periventricular]
    area[periventricular] = (np.bincount(lesion[seen], weights=same[seen] < REACH_MM, minlength=count).astype(np.int64) * du * dv)[periventricular]
    deep[periventricular] = 0.0
    far = ~near[pick]
    for i in np.unique(lesion[far]):  # a few lesions at most: a deep part is rare
        mine = lesion == i
        deep[i] = _deep_part(s[mine], u[mine], v[mine], far[mine], du, dv)
    return extent, area, deep


def _inplane_interior(labels: np.ndarray) -> np.ndarray:
    """Labelled voxels whose four in-plane neighbours are labelled too (the box's border counts as outside)."""
    inside = labels > 0
    padded = np.pad(inside, ((0, 0), (1, 1), (1, 1)))
    return inside & padded[:, :-2, 1:-1] & padded[:, 2:, 1:-1] & padded[:, 1:-1, :-2] & padded[:, 1:-1, 2:]


def _distance_3d(field: Callable[..., np.ndarray], s: np.ndarray, u: np.ndarray, v: np.ndarray, n_slices: int, thickness: float,
                 reach: float) -> np.ndarray:
    """Per voxel (s, u, v): the smallest centre-to-centre distance (mm) to a structure over the slices within ``reach``,
    from ``field(slices, u, v, selection)``, the in-plane distance on a slice (float32, inf: none near) of the voxels
    picked by a boolean ``selection``. Exact up to ``reach``; anything larger only says farther than ``reach``."""
    best = np.full(s.shape, np.inf)
    # only slices whose centres lie within reach: farther ones cannot give a distance up to reach
    steps = int(np.floor(reach / thickness)) + 1
    while steps * thickness > reach:
        steps -= 1
    for dz in range(-steps, steps + 1):
        k = s + dz
        ok = (k >= 0) & (k < n_slices)
        gap = (np.array([dz]) * thickness) ** 2
        best[ok] = np.minimum(best[ok], np.sqrt(gap + field(k[ok], u[ok], v[ok], ok).astype(np.float64) ** 2))
    return best


class CortexNeighbourhood:
    """In-plane distance to the cortex up to ``reach`` (DISTANCE_MM) around the lesions, looked up pixel offset by
    pixel offset (nearest first) from the lesions' edge voxels only: far fewer lookups than a distance transform around
    each lesion."""

    #: offsets tried together
    GROUP = 24

    def __init__(self, anat: np.ndarray, start: np.ndarray, shape: Tuple[int, ...], sampling: Tuple[float, float, float],
                 reach: float = DISTANCE_MM) -> None:
        _, du, dv = sampling
        margin = np.array([0, int(np.ceil(reach / du)), int(np.ceil(reach / dv))])
        # every slice, in-plane the lesion box widened by the margin (False beyond the image)
        self.lo = np.array([0, *start[1:]]) - margin
        hi = np.array([anat.shape[0], *(np.asarray(start[1:]) + np.asarray(shape[1:]))]) + margin
        self.cortex = np.zeros(tuple(hi - self.lo), bool)
        a, b = np.maximum(self.lo, 0), np.minimum(hi, anat.shape)
        self.cortex[tuple(slice(x - o, y - o) for x, y, o in zip(a, b, self.lo))] = anat[tuple(slice(x, y) for x, y in zip(a, b))] == CORTEX
        rows, cols = np.meshgrid(np.arange(-margin[1], margin[1] + 1), np.arange(-margin[2], margin[2] + 1), indexing="ij")
        # float64 and then float32, as the distance transform computes and inplane_distance stores it
        dist = np.sqrt((rows * du) ** 2 + (cols * dv) ** 2).astype(np.float32)
        keep = dist <= reach
        order = np.argsort(dist[keep], kind="stable")
        self.steps, self.dist = (rows[keep] * self.cortex.shape[2] + cols[keep])[order], dist[keep][order]

    def at(self, k: np.ndarray, u: np.ndarray, v: np.ndarray, selection: np.ndarray, interior: np.ndarray) -> np.ndarray:
        """In-plane distance (float32) from voxels (k, u, v) in the lesion box to the nearest cortex voxel on slice k;
        inf beyond the reach. ``interior[selection]`` marks voxels inside their lesion in-plane: they only get 0 (on
        the cortex) or inf, which leaves a lesion's minimum unchanged (it lies on its in-plane edge or on the cortex)."""
        _, h, w = self.cortex.shape
        base = (k * h + (u - self.lo[1])) * w + (v - self.lo[2])
        flat = self.cortex.reshape(-1)
        out = np.where(flat[base], np.float32(0.0), np.float32(np.inf))
        todo = np.flatnonzero(~interior[selection] & ~flat[base])
        # nearest offsets first, a group at a time: a voxel near the cortex stops at its first group with a hit
        for first in range(1, len(self.dist), self.GROUP):
            if todo.size == 0:
                break
            steps, dist = self.steps[first:first + self.GROUP], self.dist[first:first + self.GROUP]
            hits = flat[base[todo][None, :] + steps[:, None]]
            found = hits.any(axis=0)
            out[todo[found]] = dist[hits[:, found].argmax(axis=0)]
            todo = todo[~found]
        return out


class VentricleField:
    """In-plane distance to the ventricles on each slice, computed once near the ventricles and shared by all lesions.

    It covers the ventricles' bounding box plus ``reach`` (REACH_MM); outside it every distance is beyond the reach
    (inf here).
    """

    def __init__(self, anat: np.ndarray, sampling: Tuple[float, float, float], reach: float = REACH_MM) -> None:
        ventricle = anat == VENTRICLE
        self.on_slice = ventricle.any(axis=(1, 2))
        self.box = None
        self.dist = np.zeros((0, 0, 0), np.float32)
        if not self.on_slice.any():
            return
        margin = [int(np.ceil(reach / d)) for d in sampling]
        box = []
        for axis in range(3):
            hit = np.flatnonzero(ventricle.any(axis=tuple(a for a in range(3) if a != axis)))
            box.append(slice(max(int(hit[0]) - margin[axis], 0), min(int(hit[-1]) + 1 + margin[axis], anat.shape[axis])))
        self.box = tuple(box)
        self.dist = inplane_distance(ventricle[self.box], sampling[1], sampling[2])

    def at(self, k: np.ndarray, u: np.ndarray, v: np.ndarray, selection: object = None) -> np.ndarray:
        """The distances (float32) at voxels (k, u, v) of the full volume (inf where the field does not reach);
        ``selection`` is accepted for :func:`_distance_3d` and ignored."""
        out = np.full(np.shape(k), np.inf, np.float32)
        if self.box is None:
            return out
        local = [c - b.start for c, b in zip((k, u, v), self.box)]
        inside = np.all([(c >= 0) & (c < n) for c, n in zip(local, self.dist.shape)], axis=0)
        out[inside] = self.dist[tuple(c[inside] for c in local)]
        return out


def _deep_part(s: np.ndarray, u: np.ndarray, v: np.ndarray, far: np.ndarray, du: float, dv: float) -> float:
    """Long axis (mm) of the largest connected part of a lesion made of its voxels flagged ``far``; 0 when none."""
    if not far.any():
        return 0.0
    lo = np.array([s[far].min(), u[far].min(), v[far].min()])
    part = np.zeros(tuple(np.array([s[far].max(), u[far].max(), v[far].max()]) - lo + 1), bool)
    part[s[far] - lo[0], u[far] - lo[1], v[far] - lo[2]] = True
    parts, n = ndimage.label(part, structure=np.ones((3, 3, 3), bool))
    return float(_long_axes(parts, n, du, dv).max())


def location_volumes(locations: LesionLocations, voxel_ml: float) -> Dict[str, float]:
    """summary.csv volumes (ml): the lesions of each location class, and the supratentorial lesions' voxels within and
    beyond REACH_MM (3D) of the ventricles, the 10 mm rule of Griffanti et al. 2018 for periventricular and deep WMH."""
    where = np.asarray(locations.location, dtype=object)
    volumes = {f"{name}_volume_ml": round(float(locations.voxels[where == name].sum() * voxel_ml), 4) for name in LOCATIONS}
    split = np.isin(where, SPLIT_CLASSES)
    near = int(locations.near_ventricle_voxels[split].sum())
    volumes[NEAR_VENTRICLES_COLUMN] = round(near * voxel_ml, 4)
    volumes[FAR_FROM_VENTRICLES_COLUMN] = round(float(locations.voxels[split].sum() - near) * voxel_ml, 4)
    return volumes


def location_counts(locations: np.ndarray) -> Dict[str, int]:
    """Number of lesions per location class, every class present (0 when none)."""
    values = list(locations)
    return {name: int(values.count(name)) for name in LOCATIONS}


def dis_regions(locations: np.ndarray, long_axis_mm: np.ndarray) -> Dict[str, int]:
    """Lesions of at least DIS_MIN_LONG_AXIS_MM per McDonald 2017 brain region (the spinal cord is not imaged)."""
    counted = np.asarray(long_axis_mm) >= DIS_MIN_LONG_AXIS_MM
    locations = np.asarray(locations, dtype=object)
    return {region: int(np.count_nonzero(np.isin(locations, classes) & counted)) for region, classes in DIS_REGIONS.items()}


def dis_summary(locations: np.ndarray, long_axis_mm: np.ndarray) -> Dict[str, object]:
    """summary.csv fields of dissemination in space: counts per region, how many regions have one, and which."""
    counts = dis_regions(locations, long_axis_mm)
    hit: List[str] = [region for region, n in counts.items() if n > 0]
    fields: Dict[str, object] = {f"mcdonald_{region}": n for region, n in counts.items()}
    fields["mcdonald_dis_regions"] = len(hit)
    fields["mcdonald_dis_region_names"] = ";".join(hit)
    return fields


def long_axes_mm(labels: np.ndarray, count: int, geometry: Geometry) -> np.ndarray:
    """Longest in-plane axis (mm) of each of ``count`` labelled lesions on a scan's whole grid (see :func:`_long_axes`)."""
    _, du, dv = grid_sampling(geometry)
    return _long_axes(slice_first(labels, geometry), count, du, dv)
