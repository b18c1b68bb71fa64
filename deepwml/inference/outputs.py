"""Where each case's outputs go, whether they are complete (resume), and refusing to overwrite any input."""
from __future__ import annotations

import os
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple

from deepwml.imageio import split_ending
from deepwml.inference.bids_names import output_names
from deepwml.inference.inputs import InputCase
from deepwml.inference.output_folder import MARKER_NAME
from deepwml.utils.atomic import atomic_path
from deepwml.utils.errors import DeepWMLError

if TYPE_CHECKING:
    # pandas takes ~0.5 s to import: a prediction run loads it in a case worker, not before the first case
    import pandas as pd


@dataclass(frozen=True)
class ExtraOutputs:
    """Which optional per-case outputs a run writes besides mask, lesion table, probabilities and QC picture."""

    uncertainty: bool = False
    report: bool = False
    pdf: bool = False
    dicom_seg: bool = False
    #: CASE_findings.dcm: the findings over the QC montage as a DICOM Secondary Capture (DICOM inputs)
    dicom_capture: bool = False
    #: CASE_sr.dcm: the measurements as a DICOM Structured Report (TID 1500; DICOM inputs)
    dicom_sr: bool = False
    #: CASE_anatomy<ending>: the anatomy model's label map (deepwml_predict --save-anatomy)
    anatomy: bool = False
    #: CASE_lesionids<ending> and .txt: every lesion under its lesion_id, and the label names (--save-lesion-ids)
    lesion_ids: bool = False
    #: False for a multi-class model, whose prediction is a label map without lesion table
    lesion_table: bool = True


@dataclass(frozen=True)
class CaseOutputs:
    """The files one case produces."""

    mask: Path
    probabilities: Path
    lesions: Path
    qc: Path
    uncertainty: Optional[Path] = None
    report_html: Optional[Path] = None
    report_pdf: Optional[Path] = None
    dicom_seg: Optional[Path] = None  # DICOM series inputs only
    anatomy: Optional[Path] = None
    dicom_capture: Optional[Path] = None  # DICOM series inputs only
    dicom_sr: Optional[Path] = None  # DICOM series inputs only
    lesion_ids: Optional[Path] = None
    lesion_id_names: Optional[Path] = None

    def required(self, probabilities: bool, qc: bool = True, extras: ExtraOutputs = ExtraOutputs()) -> List[Path]:
        """Files that must exist for the case to count as done (the PDF never: its converter may be missing)."""
        paths = [self.mask, self.lesions] if extras.lesion_table else [self.mask]
        if probabilities:
            paths.append(self.probabilities)
        if qc:
            paths.append(self.qc)
        chosen = [(extras.uncertainty, self.uncertainty), (extras.report, self.report_html), (extras.dicom_seg, self.dicom_seg),
                  (extras.anatomy, self.anatomy), (extras.dicom_capture, self.dicom_capture), (extras.dicom_sr, self.dicom_sr),
                  (extras.lesion_ids, self.lesion_ids), (extras.lesion_ids, self.lesion_id_names)]
        return paths + [p for wanted, p in chosen if wanted and p is not None]

    def complete(self, probabilities: bool, qc: bool = True, extras: ExtraOutputs = ExtraOutputs()) -> bool:
        """True when every required output exists (atomic writes mean an existing file is a whole file)."""
        return all(p.is_file() for p in self.required(probabilities, qc, extras))

    def extra_paths(self) -> List[Path]:
        """Every optional output path of the case."""
        return [p for p in (self.uncertainty, self.report_html, self.report_pdf, self.dicom_seg, self.anatomy, self.dicom_capture,
                          self.dicom_sr, self.lesion_ids, self.lesion_id_names) if p is not None]


def case_outputs(out_dir: Path, case: InputCase) -> CaseOutputs:
    """Output paths of ``case`` below ``out_dir`` (BIDS-derivative names for the images and the lesion table when
    the case asks for them and its id carries BIDS entities; see deepwml.inference.bids_names)."""
    ending = case.output_ending
    names = output_names(case.case_id, case.bids_names)
    return CaseOutputs(
        mask=out_dir / f"{names.mask}{ending}",
        probabilities=out_dir / f"{names.probabilities}{ending}",
        lesions=out_dir / f"{names.lesions}.csv",
        qc=out_dir / "qc" / f"{case.case_id}.png",
        uncertainty=out_dir / f"{names.uncertainty}{ending}",
        report_html=out_dir / "report" / f"{case.case_id}.html",
        report_pdf=out_dir / "report" / f"{case.case_id}.pdf",
        dicom_seg=out_dir / f"{case.case_id}_seg.dcm" if case.kind == "dicom" else None,
        anatomy=out_dir / f"{names.anatomy}{ending}",
        dicom_capture=out_dir / f"{case.case_id}_findings.dcm" if case.kind == "dicom" else None,
        dicom_sr=out_dir / f"{case.case_id}_sr.dcm" if case.kind == "dicom" else None,
        lesion_ids=out_dir / f"{names.lesion_ids}{ending}",
        lesion_id_names=out_dir / f"{names.lesion_ids}.txt",
    )


def summary_path(out_dir: Path, num_parts: int = 1, part_id: int = 0) -> Path:
    """summary.csv, or summary_partK_of_N.csv when the input set is split (parts must not race for one file)."""
    if num_parts == 1:
        return out_dir / "summary.csv"
    return out_dir / f"summary_part{part_id}_of_{num_parts}.csv"


def _real(path: Path) -> str:
    """A comparable form of ``path`` (symlinks resolved, case kept)."""
    return os.path.realpath(path)


def check_inputs_safe(cases: Sequence[InputCase], out_dir: Path, input_path: Path) -> None:
    """Refuse an output folder that is the input folder or whose outputs would replace any input file."""
    out_real = _real(out_dir)
    if Path(input_path).is_dir() and _real(input_path) == out_real:
        # even without a name clash, masks written there would be read as new inputs by the next run
        raise DeepWMLError("output folder is the input folder; choose another -o", out_dir)
    protected = {}
    for case in cases:
        if case.kind == "dicom" and _real(case.source) == out_real:
            raise DeepWMLError(f"output folder is the input DICOM series folder of case {case.case_id}; choose another -o", out_dir)
        for f in case.input_files():
            protected[_real(f)] = case.case_id
    for case in cases:
        o = case_outputs(out_dir, case)
        for p in (o.mask, o.probabilities, o.lesions, o.qc, summary_path(out_dir), *o.extra_paths()):
            owner = protected.get(_real(p))
            if owner is not None:
                raise DeepWMLError(
                    f"writing {p.name} would overwrite the input of case {owner}; choose an output folder "
                    "that holds no inputs (-o must differ from -i)",
                    out_dir,
                )


def _fold(name: str) -> str:
    """A name as a case-insensitive file system compares it (macOS also stores names decomposed)."""
    return unicodedata.normalize("NFC", name).casefold()


def _collision_key(path: Path, out_dir: Path, image: bool) -> Tuple[str, str, bool]:
    """What two output files must not share: the folder and the name in any letter case, and for images the name
    without its ending (``A_prob.mha`` and ``A_prob.nii.gz`` are one case's mask to a reader; a detached header's
    data file shares its stem)."""
    name = split_ending(path)[0] if image else path.name
    return _fold(str(path.parent.relative_to(out_dir))), _fold(name), image


def check_output_collisions(
    cases: Sequence[InputCase], out_dir: Path, save_probabilities: bool, write_qc: bool = True,
    num_parts: int = 1, part_id: int = 0, extras: ExtraOutputs = ExtraOutputs(),
) -> None:
    """Refuse, before any work, two outputs of a run that are one file or differ only in letter case or ending."""
    owners: Dict[Tuple[str, str, bool], Tuple[str, Path, str]] = {}

    def claim(path: Path, owner: str, role: str, image: bool = False) -> None:
        key = _collision_key(path, out_dir, image)
        if key not in owners:
            owners[key] = (owner, path, role)
            return
        other, other_path, other_role = owners[key]
        if other_path.name == path.name:
            how = f"would both write {path.name}"
        else:
            how = f"would write {other_path.name} and {path.name}, which one file system or reader takes for the same file"
        raise DeepWMLError(
            f"cases {other} and {owner} {how} ({other_role} of {other}, {role} of {owner}); rename one of the inputs"
            + (" or leave out --save-probabilities" if "probabilities" in (role, other_role) else ""),
            out_dir,
        )

    for name in {MARKER_NAME, summary_path(out_dir).name, summary_path(out_dir, num_parts, part_id).name}:
        claim(out_dir / name, "(the run)", name)
    for case in cases:
        o = case_outputs(out_dir, case)
        claim(o.mask, case.case_id, "mask", image=True)
        if save_probabilities:
            claim(o.probabilities, case.case_id, "probabilities", image=True)
        claim(o.lesions, case.case_id, "lesion table")
        if write_qc:
            claim(o.qc, case.case_id, "QC picture")
        if extras.uncertainty:
            claim(o.uncertainty, case.case_id, "uncertainty map", image=True)
        if extras.report:
            claim(o.report_html, case.case_id, "report page")
            if extras.pdf:
                claim(o.report_pdf, case.case_id, "report PDF")
        if extras.dicom_seg and o.dicom_seg is not None:
            claim(o.dicom_seg, case.case_id, "DICOM SEG")
        if extras.dicom_capture and o.dicom_capture is not None:
            claim(o.dicom_capture, case.case_id, "DICOM findings picture")
        if extras.dicom_sr and o.dicom_sr is not None:
            claim(o.dicom_sr, case.case_id, "DICOM SR")
        if extras.anatomy:
            claim(o.anatomy, case.case_id, "anatomy label map", image=True)
        if extras.lesion_ids:
            claim(o.lesion_ids, case.case_id, "lesion-id map", image=True)
            claim(o.lesion_id_names, case.case_id, "lesion-id names")


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    """Write a table as CSV atomically."""
    with atomic_path(path, ".csv") as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6g")
