"""Where each case's outputs go, whether they are complete (resume), and refusing to overwrite any input."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence

import pandas as pd

from deepwml.inference.inputs import InputCase
from deepwml.utils.atomic import atomic_path
from deepwml.utils.errors import DeepWMLError


@dataclass(frozen=True)
class CaseOutputs:
    """The files one case produces."""

    mask: Path
    probabilities: Path
    lesions: Path
    qc: Path

    def required(self, probabilities: bool, qc: bool = True) -> List[Path]:
        """Files that must exist for the case to count as done."""
        paths = [self.mask, self.lesions]
        if probabilities:
            paths.append(self.probabilities)
        if qc:
            paths.append(self.qc)
        return paths

    def complete(self, probabilities: bool, qc: bool = True) -> bool:
        """True when every required output exists (atomic writes mean an existing file is a whole file)."""
        return all(p.is_file() for p in self.required(probabilities, qc))


def case_outputs(out_dir: Path, case: InputCase) -> CaseOutputs:
    """Output paths of ``case`` below ``out_dir``."""
    ending = case.output_ending
    return CaseOutputs(
        mask=out_dir / f"{case.case_id}{ending}",
        probabilities=out_dir / f"{case.case_id}_prob{ending}",
        lesions=out_dir / f"{case.case_id}_lesions.csv",
        qc=out_dir / "qc" / f"{case.case_id}.png",
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
        for p in (o.mask, o.probabilities, o.lesions, o.qc, summary_path(out_dir)):
            owner = protected.get(_real(p))
            if owner is not None:
                raise DeepWMLError(
                    f"writing {p.name} would overwrite the input of case {owner}; choose an output folder "
                    "that holds no inputs (-o must differ from -i)",
                    out_dir,
                )


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    """Write a table as CSV atomically."""
    with atomic_path(path, ".csv") as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6g")
