"""Write a synthetic multi-centre raw dataset: case plan, test split by centre, parallel resumable generation."""
from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple, Union

import numpy as np

from deepwml.anatomy.labels import DATASET_LABELS, LESION_AWARE_LABELS, anatomy_from_truth, with_lesion_class
from deepwml.datasets import CaseMeta, DatasetJson, dataset_folder_name
from deepwml.datasets.raw_dataset import DATASET_DIR
from deepwml.imageio import write_image
from deepwml.paths import raw_root
from deepwml.synthetic.centres import Centre, patients_at_scale, select_centres
from deepwml.synthetic.generate import GENERATOR_VERSION, SKULL_STRIPPED_SHARE, case_id_for, generate_case
from deepwml.utils.atomic import read_json, write_json
from deepwml.utils.errors import DatasetError

FILE_ENDING = ".nii.gz"
#: Hidden folder inside the dataset that records the request and finished cases until dataset.json is written.
WORK_DIR = ".synthetic"
#: Values of ``skull_stripped`` / ``--skull-stripped`` besides a share between 0 and 1.
SKULL_STRIPPED_CHOICES = ("auto", "always", "never")


def skull_strip_setting(value: str) -> Tuple[Optional[bool], float]:
    """(forced stripping or None to draw per case, the share drawn) of a ``skull_stripped`` value: 'auto' (the
    generator's share), 'always', 'never', or a share of the cases between 0 and 1 such as '0.5'."""
    if value in SKULL_STRIPPED_CHOICES:
        return {"auto": None, "always": True, "never": False}[value], SKULL_STRIPPED_SHARE
    try:
        share = float(value)
    except (TypeError, ValueError):
        share = float("nan")
    if not 0.0 <= share <= 1.0:
        raise DatasetError(f"skull_stripped must be one of {', '.join(SKULL_STRIPPED_CHOICES)} or a share of the cases "
                           f"between 0 and 1, got {value!r}")
    return None, share


@dataclass(frozen=True)
class CaseSpec:
    """One case to generate: which centre, which patient of it, the seed and the split it goes to."""

    case_id: str
    centre: str
    index: int
    seed: int
    split: str
    #: 'auto' (drawn per case), 'always', 'never' or a share of the cases drawn per case ('0.5')
    skull_stripped: str = "auto"
    #: write the anatomy label map (deepwml.anatomy.labels) as the label instead of the lesion mask
    anatomy: bool = False
    #: with ``anatomy``: the lesion voxels in the parenchyma as the lesion class (deepwml.anatomy.labels.LESION)
    lesion_class: bool = False


def plan_cases(centres: List[Centre], scale: float, seed: int, test_fraction: float) -> List[CaseSpec]:
    """Every case of the dataset; the test cases are a ``test_fraction`` of each centre (at least one stays training)."""
    if not 0.0 <= test_fraction < 1.0:
        raise DatasetError(f"--test-fraction must be in [0, 1), got {test_fraction}")
    specs = []
    for c in centres:
        n = patients_at_scale(c, scale)
        n_test = min(n - 1, int(np.floor(n * test_fraction + 0.5)))
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), sum(map(ord, c.name)), 7]))
        test = set(rng.permutation(n)[:n_test].tolist())
        for i in range(n):
            specs.append(CaseSpec(case_id_for(c.name, i + 1), c.name, i + 1, int(seed), "Ts" if i in test else "Tr"))
    return specs


def generate_dataset(
    out_root: Optional[Union[str, Path]] = None,
    dataset_id: int = 501,
    name: str = "Synth",
    scale: float = 1.0,
    centres: Optional[Iterable[str]] = None,
    diseases: Optional[Iterable[str]] = None,
    seed: int = 0,
    test_fraction: float = 0.2,
    n_jobs: int = 1,
    overwrite: bool = False,
    progress: Optional[bool] = None,
    skull_stripped: str = "auto",
    anatomy: bool = False,
    lesion_class: bool = False,
) -> Path:
    """Generate (or finish generating) a raw dataset below ``out_root`` (default: the raw data root); returns its folder.

    The same arguments give the same files, whatever ``n_jobs``. An existing dataset is never replaced unless
    ``overwrite``; an interrupted run with the same arguments resumes where it stopped. ``skull_stripped``:
    'auto' strips a share of the cases drawn per case, 'always' or 'never' all or none. ``anatomy``: the labels are
    the anatomy label maps (deepwml.anatomy.labels: 5 classes) instead of the lesion masks; the images are the same.
    ``lesion_class`` (with ``anatomy``): the lesions in the parenchyma as a sixth class, for a lesion-aware model.
    """
    skull_strip_setting(skull_stripped)  # a bad value is refused before anything is written
    if lesion_class and not anatomy:
        raise DatasetError("--lesion-class needs --anatomy: it adds the lesion class to the anatomy label maps")
    chosen = select_centres(centres, diseases)
    root = raw_root(out_root)
    folder = root / dataset_folder_name(dataset_id, name)
    request = {
        "generator_version": GENERATOR_VERSION,
        "scale": float(scale),
        "centres": [c.name for c in chosen],
        "seed": int(seed),
        "test_fraction": float(test_fraction),
        "skull_stripped": skull_stripped,
    }
    if anatomy:
        # only when set: the request of a lesion dataset made before this option existed stays the same
        request["labels"] = "anatomy_lesions" if lesion_class else "anatomy"
    specs = [replace(s, skull_stripped=skull_stripped, anatomy=anatomy, lesion_class=lesion_class)
             for s in plan_cases(chosen, scale, seed, test_fraction)]
    if _prepare_folder(root, folder, int(dataset_id), request, overwrite):
        print(f"{folder}: already complete with these settings; nothing to do", file=sys.stderr)
        return folder
    work = folder / WORK_DIR
    write_json(work / "request.json", request)
    todo = [s for s in specs if not _is_done(folder, s)]
    _run_parallel(todo, folder, n_jobs, len(specs), progress)
    _write_dataset_json(folder, specs, request)
    shutil.rmtree(work, ignore_errors=True)
    return folder


def _prepare_folder(root: Path, folder: Path, dataset_id: int, request: Dict[str, Any], overwrite: bool) -> bool:
    """Check what is already on disk; True when the dataset is complete with the same request."""
    if root.is_dir():
        clash = [p.name for p in root.iterdir() if p != folder and DATASET_DIR.match(p.name) and int(DATASET_DIR.match(p.name).group(1)) == dataset_id]
        if clash:
            raise DatasetError(f"dataset id {dataset_id} is already used by {', '.join(clash)}; choose another --dataset-id", root)
    if not folder.exists():
        return False
    if overwrite:
        shutil.rmtree(folder)
        return False
    json_path = folder / "dataset.json"
    if json_path.exists():
        if read_json(json_path).get("synthetic") == request:
            return True
        raise DatasetError("dataset already exists (made with other settings, or not by deepwml_make_synthetic); pass --overwrite to replace it", folder)
    request_path = folder / WORK_DIR / "request.json"
    if request_path.exists():
        if read_json(request_path) == request:
            return False  # an interrupted run: resume it
        raise DatasetError(f"an unfinished synthetic dataset with other settings is here ({read_json(request_path)}); "
                           "run with those settings to finish it, or pass --overwrite", folder)
    if any(folder.iterdir()):
        raise DatasetError("folder exists and is not a synthetic dataset; pass --overwrite to replace it", folder)
    return False


def _paths(folder: Path, spec: CaseSpec) -> Dict[str, Path]:
    """Image, label and finished-marker paths of one case."""
    return {
        "image": folder / f"images{spec.split}" / f"{spec.case_id}{FILE_ENDING}",
        "label": folder / f"labels{spec.split}" / f"{spec.case_id}{FILE_ENDING}",
        "meta": folder / WORK_DIR / f"{spec.case_id}.json",
    }


def _is_done(folder: Path, spec: CaseSpec) -> bool:
    """A case is finished when its metadata marker exists; it is written after the image and label."""
    return all(p.exists() for p in _paths(folder, spec).values())


def make_case(spec: CaseSpec, folder: Union[str, Path]) -> str:
    """Generate one case and write its label, image and (last, as the 'finished' marker) its metadata."""
    paths = _paths(Path(folder), spec)
    forced, share = skull_strip_setting(spec.skull_stripped)
    case = generate_case(spec.centre, spec.index, spec.seed, spec.case_id, truth=spec.anatomy, skull_stripped=forced,
                         strip_share=share)
    label = case.label
    if spec.anatomy:
        label = anatomy_from_truth(case.truth)
        label = with_lesion_class(label, case.label > 0) if spec.lesion_class else label
    write_image(label, case.geometry, paths["label"])
    write_image(case.image, case.geometry, paths["image"])
    write_json(paths["meta"], case.meta.to_dict())
    return spec.case_id


def _run_parallel(todo: List[CaseSpec], folder: Path, n_jobs: int, total: int, progress: Optional[bool]) -> None:
    """Generate ``todo`` with one case per worker at a time (memory stays that of ``n_jobs`` cases)."""
    from joblib import Parallel, delayed
    from tqdm import tqdm

    show = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(total=total, initial=total - len(todo), desc="synthesising", unit="case", disable=not show, file=sys.stderr)
    try:
        if n_jobs == 1 or len(todo) <= 1:
            for spec in todo:
                make_case(spec, folder)
                bar.update()
        else:
            jobs = (delayed(make_case)(spec, str(folder)) for spec in todo)
            for _ in Parallel(n_jobs=n_jobs, return_as="generator_unordered", batch_size=1)(jobs):
                bar.update()
    finally:
        bar.close()


#: dataset.json "labels" of each kind of label the request names (a lesion dataset's request names none)
_LABELS = {"anatomy": DATASET_LABELS, "anatomy_lesions": LESION_AWARE_LABELS}


def _write_dataset_json(folder: Path, specs: List[CaseSpec], request: Dict[str, Any]) -> None:
    """dataset.json with every case's centre, disease, scanner and acquisition, written last."""
    meta = DatasetJson(
        name=folder.name,
        description="Synthetic multi-centre 2D FLAIR after Zhang, Duan et al. 2021 (deepwml_make_synthetic)",
        file_ending=FILE_ENDING,
        labels=dict(_LABELS.get(request.get("labels"), {"background": 0, "lesion": 1})),
        extra={"synthetic": request},
    )
    for spec in sorted(specs, key=lambda s: s.case_id):
        meta.cases[spec.case_id] = CaseMeta.from_dict(read_json(_paths(folder, spec)["meta"]))
    meta.num_training = sum(s.split == "Tr" for s in specs)
    meta.num_test = sum(s.split == "Ts" for s in specs)
    meta.save(folder / "dataset.json")

