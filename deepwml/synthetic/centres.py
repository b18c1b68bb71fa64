"""The twelve centres of the paper's Table 1: cohort sizes, slice thickness, in-plane spacing and scanner."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from deepwml.constants import DISEASES
from deepwml.utils.errors import DeepWMLError

#: Fewest and most slices a synthetic patient gets (the paper's stacks hold 16-30 slices).
MIN_SLICES, MAX_SLICES = 17, 30


@dataclass(frozen=True)
class Centre:
    """One row of Table 1, plus how that centre stores its images."""

    name: str
    disease: str
    patients: int
    slices: int
    thicknesses_mm: Tuple[float, ...]
    spacings_mm: Tuple[float, ...]
    vendor: str
    scanners: Tuple[str, ...]
    field_strength: float
    #: probability that a stack is tilted (oblique direction cosines), as when slices follow the AC-PC line
    p_oblique: float = 0.3
    #: phase field of view (x / y) choices; <1 gives rectangular matrices such as 512 x 416
    phase_fov: Tuple[float, ...] = (1.0,)
    #: how the centre's converter wrote the voxel order: 'LPS' (ITK/DICOM) or 'RAS' (dcm2niix-style flips)
    storage: str = "LPS"

    @property
    def mean_slices(self) -> float:
        """Average slices per patient in Table 1, clipped to the synthetic range."""
        return min(MAX_SLICES, max(MIN_SLICES, self.slices / self.patients))

    @property
    def case_prefix(self) -> str:
        """Case id prefix, e.g. 'MS1' for 'MS#1'."""
        return self.name.replace("#", "")


CENTRES: Dict[str, Centre] = {
    c.name: c
    for c in (
        Centre("MS#1", "MS", 30, 588, (5.5, 6.0, 6.5), (0.4688, 0.9375), "GE", ("Discovery MR750",), 3.0, 0.3),
        Centre("MS#2", "MS", 37, 592, (8.0,), (0.4688,), "GE", ("Discovery MR750",), 3.0, 0.2, storage="RAS"),
        Centre("MS#3", "MS", 27, 541, (6.5,), (0.4492, 0.7188), "Siemens", ("Skyra",), 3.0, 0.5, (1.0, 0.8125)),
        Centre("MS#4", "MS", 27, 603, (4.0, 5.2, 5.36, 5.5, 6.5), (0.4102, 0.4297, 0.4395, 0.6875), "Siemens", ("Skyra",), 3.0, 0.5, (1.0, 0.8125), "RAS"),
        Centre("NMOSD#1", "NMOSD", 12, 246, (5.0, 6.5), (0.4688, 0.5078), "GE", ("Discovery MR750",), 3.0, 0.3),
        Centre("NMOSD#2", "NMOSD", 12, 192, (8.0,), (0.4688,), "GE", ("Discovery MR750",), 3.0, 0.2, storage="RAS"),
        Centre("NMOSD#3", "NMOSD", 6, 120, (6.5,), (0.7188,), "Siemens", ("Skyra",), 3.0, 0.5, (1.0, 0.8125)),
        Centre("NMOSD#4", "NMOSD", 43, 1373, (4.0, 5.0, 6.0, 6.5, 7.5), (0.4297, 0.4688, 0.5, 0.8, 0.9375), "Siemens", ("TrioTim",), 3.0, 0.4, (1.0, 0.8125)),
        Centre("CSVD#1", "CSVD", 52, 1067, (6.0, 6.5), (0.4688, 0.8976), "GE", ("Discovery MR750",), 3.0, 0.2),
        Centre("CSVD#2", "CSVD", 34, 620, (6.5, 7.0), (0.4492, 0.4688), "Philips", ("Achieva",), 1.5, 0.3, storage="RAS"),
        Centre("CSVD#3", "CSVD", 70, 1562, (6.0,), (0.4492,), "Philips", ("Achieva",), 1.5, 0.3),
        Centre("CSVD#4", "CSVD", 142, 2954, (6.5, 7.0, 7.8, 8.0), (0.4688,), "GE", ("Optima MR360", "Signa HDxt"), 1.5, 0.2),
    )
}

#: Matrices a scanner offers; the one giving a field of view nearest 235 mm is used.
_MATRICES = (256, 288, 320, 384, 448, 512)


def matrix_for_spacing(spacing_mm: float) -> int:
    """Reconstruction matrix for an in-plane spacing: 512 at 0.4688 mm, 320 at 0.7188 mm, 256 at 0.9375 mm."""
    return min(_MATRICES, key=lambda m: (abs(m * spacing_mm - 235.0), -m))


def select_centres(centres: Optional[Iterable[str]] = None, diseases: Optional[Iterable[str]] = None) -> List[Centre]:
    """The centres named (all when None), restricted to the diseases named; unknown names are an error."""
    names = _split(centres) if centres is not None else list(CENTRES)
    unknown = [n for n in names if n not in CENTRES]
    if unknown:
        raise DeepWMLError(f"unknown centre(s) {', '.join(unknown)}; choose from {', '.join(CENTRES)}")
    wanted = _split(diseases) if diseases is not None else None
    if wanted is not None:
        bad = [d for d in wanted if d not in DISEASES or d == "other"]
        if bad:
            raise DeepWMLError(f"unknown disease(s) {', '.join(bad)}; choose from MS, NMOSD, CSVD")
    chosen = [CENTRES[n] for n in dict.fromkeys(names) if wanted is None or CENTRES[n].disease in wanted]
    if not chosen:
        raise DeepWMLError(f"no centre matches centres={','.join(names)} and diseases={','.join(wanted or [])}")
    return chosen


def patients_at_scale(centre: Centre, scale: float) -> int:
    """Patients of ``centre`` at ``scale`` times the paper's cohort, at least one."""
    if scale <= 0:
        raise DeepWMLError(f"--scale must be positive, got {scale}")
    return max(1, int(round(centre.patients * scale)))


def _split(values: Iterable[str]) -> List[str]:
    """Accept 'A,B' or ['A', 'B'] (or a mix) and return the stripped names."""
    if isinstance(values, str):
        values = [values]
    out: List[str] = []
    for v in values:
        out += [s.strip() for s in str(v).split(",") if s.strip()]
    return out


def centre_table(centres: Sequence[Centre]) -> str:
    """Table 1 of the given centres as Markdown (for docs and the benchmark)."""
    rows = ["| centre | patients | slices | thickness mm | in-plane mm | scanner |", "|---|---|---|---|---|---|"]
    for c in centres:
        scanner = f"{c.vendor} {' / '.join(c.scanners)} {c.field_strength:g}T"
        rows.append(
            f"| {c.name} | {c.patients} | {c.slices} | {', '.join(f'{t:g}' for t in c.thicknesses_mm)} "
            f"| {', '.join(f'{s:g}' for s in c.spacings_mm)} | {scanner} |"
        )
    return "\n".join(rows)
