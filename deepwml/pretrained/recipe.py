"""How the shipped models are made, as one resumable command: synthesise, plan, train, score on another seed, install.

Every stage is a public command (the same ones a user runs), each resumable, so an interrupted run is continued
by running the same command again. What was done is recorded in ``recipe.json`` and the model card. The same
recipe makes the lesion model (``kind`` 'lesion') and the anatomy model (issue #14, ``kind`` 'anatomy': the
synthetic labels are the anatomy maps, the held-out set is scored per anatomy class). The lesion model's folds are
then distilled into one network (``distill``), which is what is shipped.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from deepwml.utils.atomic import read_json, write_json
from deepwml.utils.commands import run_command
from deepwml.utils.errors import DeepWMLError

TRAIN_ID, TRAIN_NAME = 510, "SynthPretrain"
HELDOUT_ID, HELDOUT_NAME = 511, "SynthHeldout"
#: (training, held-out) dataset id and name of each kind of model
#: the lesion model's calibration set (deepwml_calibrate): drawn like the held-out set, with its seed + CALIBRATION_SEED_OFFSET
CALIBRATION_ID, CALIBRATION_NAME, CALIBRATION_SEED_OFFSET = 514, "SynthCalibration", 1000
DATASETS = {"lesion": ((TRAIN_ID, TRAIN_NAME), (HELDOUT_ID, HELDOUT_NAME)),
            "anatomy": ((512, "SynthAnatomy"), (513, "SynthAnatomyHeldout"))}
#: the anatomy model's defaults where they differ from the lesion model's (coarse anatomy learns from fewer images):
#: those of the shipped anatomy model (about 45 min on the shared 2-core machine)
ANATOMY_DEFAULTS = {"preset": "anatomy_fast", "scale": 0.05, "epochs": 60, "iterations": 30, "heldout_scale": 0.02,
                    "folds": ("0",), "distill": False}
#: the held-out Dice of the anatomy model: a name and the classes (deepwml.anatomy.labels) it pools
ANATOMY_SCORES = {"ventricle": (2,), "brain": (1, 3, 4), "white_matter": (1,), "cortex": (3,), "infratentorial": (4,)}


@dataclass
class Recipe:
    """Everything that determines a shipped model (recorded in its card)."""

    seed: int = 0
    scale: float = 0.25
    #: cpu_fast with strong intensity augmentation, batch norm at the finer levels and instance norm at the two
    #: coarsest (plans/cpu_fast_robust_deep_in.json): the shipped model's plan since 2026-12-05 (before,
    #: cpu_fast_robust, all instance norm)
    preset: str = "cpu_fast_robust_deep_in"
    #: the trained folds; more than one are shipped as an ensemble (their probabilities averaged), which evens out
    #: how much a single training run's real-scan figures depend on its split and initialisation
    folds: Tuple[str, ...] = ("0", "1")
    epochs: int = 50
    iterations: int = 50
    heldout_seed: int = 1000
    heldout_scale: float = 0.05
    checkpoint: str = "best"
    #: 'lesion' (the shipped lesion model) or 'anatomy' (the anatomy model, deepwml_train_pretrained --anatomy)
    kind: str = "lesion"
    #: ship one network distilled from the folds (deepwml_train --distill-from) instead of the folds themselves:
    #: about the ensemble's accuracy on real scans at one network's prediction time
    distill: bool = True
    #: start every network (folds and distilled one) from this model's weights ('builtin' or a PLAN folder) at the
    #: fine-tuning learning rate instead of from random ones: a new generator version re-trains the shipped model in
    #: a fraction of the epochs. The model is copied into the work folder first (START_MODEL), so that installing the
    #: result does not change what a resumed run starts from
    start_from: Optional[str] = None
    #: the synthetic centres of the training, held-out and calibration sets (deepwml_make_synthetic --centres), e.g.
    #: to make a model for one disease's centres; None: all twelve
    centres: Optional[Tuple[str, ...]] = None
    #: the training set's skull-stripped scans (deepwml_make_synthetic --skull-stripped): 'auto' (the generator's
    #: share) or a share such as '0.5'; the held-out set keeps 'auto', so models made either way compare on one set
    skull_stripped: str = "auto"
    #: the lesion model predicts with left-right flip TTA: its temperatures and postprocessing are fitted on
    #: flip-averaged probabilities (deepwml_calibrate / deepwml_find_postprocessing --tta), whose choice records it,
    #: so deepwml_predict predicts so by default (about twice the network's time; benchmarks/README.md measures both)
    tta: bool = True
    #: with start_from: train one network (the first fold) from the start model's weights that learns the start
    #: model's probabilities beside the labels (deepwml_train --pretrained M --distill-from M), with no teacher folds
    #: trained first: the shipped network moved into another plan of the same preprocessing, e.g. cpu_fast_robust_bn
    #: (batch norm: faster and croppable at prediction)
    distill_start: bool = False
    #: deepwml_train --lr of every trained network (None: the plan's, or with start_from the fine-tuning rate)
    learning_rate: Optional[float] = None
    #: deepwml_train --distill-weight of a distilled network (None: deepwml_train's default)
    distill_weight: Optional[float] = None
    #: the anatomy model learns the lesions in the parenchyma as a sixth class (deepwml_make_synthetic --lesion-class),
    #: so that it does not take them for cortex; its map gives them the tissue around them (deepwml.anatomy.cleanup)
    lesion_class: bool = False

    @classmethod
    def defaults(cls, kind: str = "lesion") -> "Recipe":
        """The shipped recipe of a kind of model."""
        if kind not in DATASETS:
            raise DeepWMLError(f"unknown kind of model {kind!r}; choose from {', '.join(DATASETS)}")
        return cls(kind=kind, **(dict(ANATOMY_DEFAULTS, tta=False) if kind == "anatomy" else {}))

    def record(self) -> Dict[str, Any]:
        """What recipe.json records (without ``kind`` for a lesion model, and one fold as ``fold``: as before
        ensembles and the anatomy model existed, so older work folders still resume)."""
        d = asdict(self)
        if self.kind == "lesion":
            del d["kind"]
        if not self.distill:
            del d["distill"]
        if self.start_from is None:
            del d["start_from"]
        if self.skull_stripped == "auto":
            del d["skull_stripped"]
        if self.kind != "lesion":  # fitted only for a lesion model
            del d["tta"]
        if self.centres is None:
            del d["centres"]
        else:
            d["centres"] = list(self.centres)
        # added later: left out at their defaults, so that older work folders still resume
        for key, default in (("distill_start", False), ("learning_rate", None), ("distill_weight", None), ("lesion_class", False)):
            if d[key] == default:
                del d[key]
        folds = d.pop("folds")
        if len(folds) == 1:
            d["fold"] = folds[0]
        else:
            d["folds"] = list(folds)
        return d

    def folds_text(self) -> str:
        """'fold 0' or 'folds 0, 1 (ensemble)'."""
        return f"fold {self.folds[0]}" if len(self.folds) == 1 else f"folds {', '.join(self.folds)} (ensemble)"

    def shipped_text(self) -> str:
        """What is shipped, in words."""
        if self.distill_start:
            return f"one network distilled from the start model `{self.start_from}` on fold {self.folds[0]}'s split"
        if self.distill:
            return f"one network distilled from {self.folds_text()}"
        return self.folds_text()

    def datasets(self) -> Any:
        """((training id, name), (held-out id, name))."""
        return DATASETS[self.kind]


def _log(message: str) -> None:
    print(f"[deepwml_train_pretrained] {message}", flush=True)


def _run(module: str, args: List[str], env: Dict[str, str]) -> None:
    """Run one public command."""
    run_command(module, args, env, "deepwml_train_pretrained")


def _dataset(id_: int, name: str) -> str:
    return f"Dataset{id_:03d}_{name}"


def run_recipe(recipe: Recipe, workdir: Path, install_to: Optional[Path], n_jobs: int = 2, device: str = "auto") -> Path:
    """Run every stage in ``workdir``; install the model into ``install_to`` (if given); return the PLAN folder."""
    from deepwml.synthetic.generate import GENERATOR_VERSION

    from deepwml.planning.plan import load_preset

    if recipe.distill and recipe.kind != "lesion":
        raise DeepWMLError("--distill is for the lesion model (distillation averages lesion probabilities)")
    if recipe.lesion_class and recipe.kind != "anatomy":
        raise DeepWMLError("--lesion-class is for the anatomy model (--anatomy): it adds the lesion class to its labels")
    if recipe.tta and recipe.kind != "lesion":
        raise DeepWMLError("--tta is for the lesion model (its temperatures and postprocessing are fitted with it)")
    check_training_settings(recipe)
    work = workdir.resolve()
    raw, pre, res = work / "raw", work / "preprocessed", work / "results"
    env = dict(os.environ, DEEPWML_RAW=str(raw), DEEPWML_PREPROCESSED=str(pre), DEEPWML_RESULTS=str(res))
    record_path = work / "recipe.json"
    open_record(record_path, recipe, GENERATOR_VERSION)
    start = time.monotonic()
    np_ = str(n_jobs)
    (train_id, train_name), _ = recipe.datasets()
    _run("make_synthetic", ["--raw", str(raw), "--dataset-id", str(train_id), "--name", train_name, "--scale", str(recipe.scale),
                            "--seed", str(recipe.seed), "--test-fraction", "0", "-np", np_, "--skull-stripped", recipe.skull_stripped]
         + _synthetic_args(recipe) + (["--lesion-class"] if recipe.lesion_class else []), env)
    # the held-out set is drawn with another seed, so no training case is set aside as a test case
    _run("plan_and_preprocess", ["-d", str(train_id), "--preset", recipe.preset, "--test-fraction", "0", "-np", np_], env)
    # a preset may be given as a .json file: the PLAN folder is named after the plan inside
    plan_name = load_preset(recipe.preset).name
    model_dir = res / _dataset(train_id, train_name) / plan_name
    start_args = _start_model(recipe, work, record_path) + _training_args(recipe, work)
    validation = {fold: _train_fold(recipe, fold, train_id, plan_name, model_dir, env, device, start_args) for fold in recipe.folds}
    score = _score_heldout_anatomy if recipe.kind == "anatomy" else _score_heldout
    calibration = postprocessing = None
    if recipe.kind == "lesion" and not recipe.distill:
        calibration = _calibrate(recipe, work, model_dir, list(recipe.folds), env, np_, device)
        postprocessing = _choose_postprocessing(recipe, work, model_dir, list(recipe.folds), env, np_, device)
    figures = score(recipe, work, model_dir, list(recipe.folds), _ensemble_tag(recipe.folds), env, np_, device)
    hours = {fold: training_hours(model_dir / f"fold_{fold}") for fold in recipe.folds}
    shipped_dir, extra = model_dir, {}
    if recipe.distill:
        shipped_dir = _train_student(recipe, train_id, plan_name, model_dir, work, env, device, start_args)
        fold = recipe.folds[0]
        extra = {"teacher_figures": figures, "teacher_validation": validation, "teacher_training_hours": hours}
        validation = {fold: read_json(shipped_dir / f"fold_{fold}" / "validation" / "summary.json")}
        hours = {fold: training_hours(shipped_dir / f"fold_{fold}")}
        calibration = _calibrate(recipe, work, shipped_dir, [fold], env, np_, device)
        postprocessing = _choose_postprocessing(recipe, work, shipped_dir, [fold], env, np_, device)
        figures = score(recipe, work, shipped_dir, [fold], DISTILLED, env, np_, device)
    record = read_json(record_path)
    for key in ("teacher_figures", "teacher_validation", "teacher_training_hours"):
        record.pop(key, None)
    record.update(figures=figures, validation=validation, hours=round((time.monotonic() - start) / 3600, 3),
                  training_hours=hours, **extra)
    if calibration is not None:
        record["calibration"] = calibration
    if postprocessing is not None:
        record["postprocessing"] = postprocessing
    write_json(record_path, record)
    if install_to is not None:
        install_builtin(shipped_dir, recipe, record, install_to)
    return shipped_dir


def check_training_settings(recipe: Recipe) -> None:
    """Refuse settings that cannot go with --distill-start, a distillation weight with nothing distilled, and rates
    and weights deepwml_train would refuse only after the data is made."""
    if recipe.learning_rate is not None and not recipe.learning_rate > 0:
        raise DeepWMLError(f"--lr must be positive, got {recipe.learning_rate}")
    if recipe.distill_weight is not None and not 0 < recipe.distill_weight <= 1:
        raise DeepWMLError(f"--distill-weight must be in (0, 1], got {recipe.distill_weight}")
    if recipe.distill_start:
        if recipe.start_from is None:
            raise DeepWMLError("--distill-start needs --start-from (the model whose probabilities the network learns)")
        if recipe.kind != "lesion":
            raise DeepWMLError("--distill-start is for the lesion model (distillation averages lesion probabilities)")
        if recipe.distill:
            raise DeepWMLError("--distill-start trains one network from the start model, --distill one from trained "
                               "folds: give one (--no-distill with --distill-start)")
        if len(recipe.folds) != 1:
            raise DeepWMLError(f"--distill-start trains one network: give one fold, not {', '.join(recipe.folds)}")
    if recipe.distill_weight is not None and not (recipe.distill or recipe.distill_start):
        raise DeepWMLError("--distill-weight needs --distill or --distill-start (nothing is distilled)")


def _training_args(recipe: Recipe, work: Path) -> List[str]:
    """deepwml_train arguments of a fresh (not continued) run beyond --pretrained: the start model as teacher with
    --distill-start, the recipe's learning rate and distillation weight."""
    args = ["--distill-from", str(work / START_MODEL)] if recipe.distill_start else []
    if recipe.learning_rate is not None:
        args += ["--lr", str(recipe.learning_rate)]
    if recipe.distill_weight is not None and recipe.distill_start:
        args += ["--distill-weight", str(recipe.distill_weight)]
    return args


def open_record(record_path: Path, recipe: Recipe, generator_version: int) -> None:
    """Start recipe.json, or check that the work folder was started with this recipe (its folds may differ)."""
    if not record_path.is_file():
        write_json(record_path, {"recipe": recipe.record(), "generator_version": generator_version})
        return
    earlier = read_json(record_path)
    if _without_folds(earlier.get("recipe")) != _without_folds(recipe.record()):
        raise DeepWMLError("this work folder was started with another recipe; use another --workdir or the same settings", record_path)
    # other folds of the same data and training are other members of the same ensemble: the missing ones are trained
    write_json(record_path, dict(earlier, recipe=recipe.record()))


def _without_folds(record: Any) -> Any:
    """A recipe record without its fold(s), whether it distils them, which checkpoint it ships and whether it fits
    with TTA (stages that build on the same training)."""
    later = ("fold", "folds", "distill", "checkpoint", "tta")
    return {k: v for k, v in record.items() if k not in later} if isinstance(record, dict) else record


#: the copy of ``Recipe.start_from`` below the work folder
START_MODEL = "start_model"


def _start_model(recipe: Recipe, work: Path, record_path: Path) -> List[str]:
    """deepwml_train's ``--pretrained`` arguments of a recipe that starts from a model ([] for random weights): the
    model is copied into the work folder once (and recorded), so a resumed run starts from the same weights."""
    if recipe.start_from is None:
        return []
    from deepwml.inference.model_loading import installed_checkpoint
    from deepwml.pretrained import BUILTIN_ALIAS, builtin_model_dir
    from deepwml.training.pretrained_weights import file_sha256

    copy = work / START_MODEL
    if not copy.is_dir():
        source = builtin_model_dir() if recipe.start_from == BUILTIN_ALIAS else Path(recipe.start_from).expanduser()
        if not (source / "plans.json").is_file() or not list(source.glob("fold_*/checkpoint_*.pth")):
            raise DeepWMLError("--start-from: not a trained model's PLAN folder (plans.json and fold_K/checkpoint_best.pth "
                               "or checkpoint_latest.pth)", source)
        staging = Path(tempfile.mkdtemp(prefix=f".{START_MODEL}.", dir=work))
        shutil.copytree(source, staging, dirs_exist_ok=True)
        staging.rename(copy)
    # the start model's own choice: the checkpoint its manifest names if it is installed, else its best one
    held = installed_checkpoint(copy, "best")
    checkpoints = sorted(copy.glob(f"fold_*/checkpoint_{held}.pth")) or sorted(copy.glob("fold_*/checkpoint_latest.pth"))
    dataset = read_json(copy / "dataset.json") if (copy / "dataset.json").is_file() else {}
    record = read_json(record_path)
    record["start_model"] = {"source": recipe.start_from, "folder": str(copy),
                             "sha256": [file_sha256(c) for c in checkpoints],
                             "generator_version": dataset.get("synthetic", {}).get("generator_version")}
    write_json(record_path, record)
    return ["--pretrained", str(checkpoints[0].parent)]


def _train_fold(recipe: Recipe, fold: str, train_id: int, plan_name: str, model_dir: Path, env: Dict[str, str],
                device: str, start_args: List[str]) -> Dict[str, Any]:
    """Train one fold unless it has finished (continuing an interrupted run); return its validation summary."""
    fold_dir = model_dir / f"fold_{fold}"
    finished = fold_dir / "validation" / "summary.json"
    if not finished.is_file():
        train_args = ["-d", str(train_id), fold, "-p", plan_name, "--epochs", str(recipe.epochs),
                      "--iterations", str(recipe.iterations), "--seed", str(recipe.seed), "--device", device]
        # a continued run keeps the weights' origin and learning rate its checkpoint records
        train_args += ["--continue"] if (fold_dir / "checkpoint_latest.pth").is_file() else start_args
        _run("train", train_args, env)
    return read_json(finished)


def _train_student(recipe: Recipe, train_id: int, plan_name: str, teacher_dir: Path, work: Path, env: Dict[str, str],
                   device: str, start_args: List[str]) -> Path:
    """Distil the trained folds into one network on the first fold's split (in ``work``/distilled, so that it keeps
    the teachers' plan and preprocessed data); returns its PLAN folder."""
    fold = recipe.folds[0]
    student_env = dict(env, DEEPWML_RESULTS=str(work / DISTILLED))
    student_dir = work / DISTILLED / teacher_dir.parent.name / plan_name
    fold_dir = student_dir / f"fold_{fold}"
    if not (fold_dir / "validation" / "summary.json").is_file():
        args = ["-d", str(train_id), fold, "-p", plan_name, "--epochs", str(recipe.epochs), "--iterations", str(recipe.iterations),
                "--seed", str(recipe.seed), "--device", device]
        if (fold_dir / "checkpoint_latest.pth").is_file():
            args.append("--continue")  # the teacher is reloaded from the checkpoint's record
        else:
            args += ["--distill-from", str(teacher_dir), "--distill-folds", *recipe.folds] + start_args
            if recipe.distill_weight is not None:
                args += ["--distill-weight", str(recipe.distill_weight)]
        _log(f"distilling {recipe.folds_text()} into one network")
        _run("train", args, student_env)
    return student_dir


def training_hours(fold_dir: Path) -> Optional[float]:
    """Hours a fold trained (its epochs and validations, from log.jsonl: every resumed part counted once)."""
    log = fold_dir / "log.jsonl"
    if not log.is_file():
        return None
    epochs = {}
    for line in log.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a line cut short by a kill
        if isinstance(row, dict) and "epoch" in row:
            epochs[row["epoch"]] = row.get("epoch_seconds", 0.0) + row.get("val_seconds", 0.0)
    return round(sum(epochs.values()) / 3600, 3)


#: the distilled network's folder below the work folder, and its held-out folders' tag
DISTILLED = "distilled"


def _ensemble_tag(folds: Tuple[str, ...]) -> str:
    """The held-out folders' tag of the trained folds: '' for one fold (as before ensembles), else '0-1'."""
    return "" if len(folds) == 1 else "-".join(folds)


def _heldout_folder(work: Path, tag: str, stem: str = "heldout_predictions", checkpoint: str = "best") -> Path:
    """The held-out predictions (or, with ``stem``, report) folder of one model (``tag``: which; and which of its
    checkpoints, as a work folder may be scored with both), as prediction resumes by file."""
    name = "_".join(part for part in (stem, tag, "" if checkpoint == "best" else checkpoint) if part)
    return work / name


def _synthetic_args(recipe: Recipe, labels: bool = True) -> List[str]:
    """deepwml_make_synthetic's options for the recipe's centres and (``labels``) the kind's labels."""
    centres = ["--centres", ",".join(recipe.centres)] if recipe.centres else []
    return centres + (["--anatomy"] if labels and recipe.kind == "anatomy" else [])


def _predict_heldout(recipe: Recipe, work: Path, model_dir: Path, folds: List[str], tag: str, env: Dict[str, str], np_: str,
                     device: str) -> Path:
    """Synthesise the held-out set (another seed) and predict it with the trained fold(s); returns the dataset folder."""
    raw = work / "raw"
    _, (heldout_id, heldout_name) = recipe.datasets()
    heldout = raw / _dataset(heldout_id, heldout_name)
    _run("make_synthetic", ["--raw", str(raw), "--dataset-id", str(heldout_id), "--name", heldout_name, "--scale",
                            str(recipe.heldout_scale), "--seed", str(recipe.heldout_seed), "--test-fraction", "0", "-np", np_]
         + _synthetic_args(recipe), env)
    # a lesion model's probability maps let deepwml_evaluate measure its calibration; its masks are predict's
    # default ones (the anatomy model's skull stripping and rules included), as its postprocessing was chosen on them;
    # masks of the work folder made otherwise (an earlier DeepWML's defaults, a re-calibration) are predicted anew
    maps = ["--save-probabilities"] if recipe.kind == "lesion" else []
    _run("predict", ["-i", str(heldout / "imagesTr"), "-o", str(_heldout_folder(work, tag, checkpoint=recipe.checkpoint)), "-m", str(model_dir),
                     "-f", *folds, "--checkpoint", recipe.checkpoint, "--device", device, "--no-qc", *maps,
                     "--overwrite-if-changed"], env)
    return heldout


def _calibrate(recipe: Recipe, work: Path, model_dir: Path, folds: List[str], env: Dict[str, str], np_: str,
               device: str) -> Dict[str, Any]:
    """Fit the shipped network(s)' temperatures (deepwml_calibrate) on a synthetic set of a third seed, unless their
    checkpoints hold a calibration of these folds already (a resumed run); the record."""
    from deepwml.inference.model_loading import CHECKPOINT_FILES
    from deepwml.training.checkpoint import read_checkpoint

    checkpoints = [model_dir / f"fold_{fold}" / CHECKPOINT_FILES[recipe.checkpoint] for fold in folds]
    done = [read_checkpoint(path).get("calibration") for path in checkpoints]
    if all(done) and all(d.get("folds") == folds and d.get("tta", False) == recipe.tta for d in done):
        _log(f"calibrated already (temperatures {done[0]['temperature_below']} / {done[0]['temperature_above']})")
        return {**done[0], "seed": recipe.heldout_seed + CALIBRATION_SEED_OFFSET, "cases": len(done[0]["cases"])}
    data = _calibration_set(recipe, work, env, np_)
    _run("calibrate", ["-m", str(model_dir), "-f", *folds, "--checkpoint", recipe.checkpoint, "-i", str(data / "imagesTr"),
                       "-l", str(data / "labelsTr"), "--device", device] + (["--tta"] if recipe.tta else []), env)
    record = read_checkpoint(checkpoints[0])["calibration"]
    return {**record, "seed": recipe.heldout_seed + CALIBRATION_SEED_OFFSET, "cases": len(record["cases"])}


def _calibration_set(recipe: Recipe, work: Path, env: Dict[str, str], np_: str) -> Path:
    """The synthetic set of the third seed that calibration and postprocessing are chosen on (made once; resumes)."""
    raw = work / "raw"
    _run("make_synthetic", ["--raw", str(raw), "--dataset-id", str(CALIBRATION_ID), "--name", CALIBRATION_NAME, "--scale",
                            str(recipe.heldout_scale), "--seed", str(recipe.heldout_seed + CALIBRATION_SEED_OFFSET),
                            "--test-fraction", "0", "-np", np_] + _synthetic_args(recipe, labels=False), env)
    return raw / _dataset(CALIBRATION_ID, CALIBRATION_NAME)


def _choose_postprocessing(recipe: Recipe, work: Path, model_dir: Path, folds: List[str], env: Dict[str, str], np_: str,
                           device: str) -> Dict[str, Any]:
    """Choose the shipped network(s)' threshold and lesion filters (deepwml_find_postprocessing) on the calibration set,
    after calibration (whose probabilities they threshold), unless their checkpoints hold a choice for these folds
    already (a resumed run); the record."""
    from deepwml.inference.model_loading import CHECKPOINT_FILES
    from deepwml.training.checkpoint import read_checkpoint

    checkpoints = [model_dir / f"fold_{fold}" / CHECKPOINT_FILES[recipe.checkpoint] for fold in folds]
    done = [read_checkpoint(path).get("postprocessing") for path in checkpoints]
    if not (all(done) and all(d["record"].get("folds") == folds and d.get("tta", False) == recipe.tta for d in done)):
        data = _calibration_set(recipe, work, env, np_)
        _run("find_postprocessing", ["-m", str(model_dir), "-f", *folds, "--checkpoint", recipe.checkpoint,
                                     "-i", str(data / "imagesTr"), "-l", str(data / "labelsTr"), "--device", device]
             + (["--tta"] if recipe.tta else []), env)
        done = [read_checkpoint(checkpoints[0])["postprocessing"]]
    else:
        _log("postprocessing chosen already")
    chosen = done[0]
    return {"threshold": chosen["threshold"], "min_lesion_ml": chosen["min_lesion_ml"],
            "min_lesion_peak": chosen["min_lesion_peak"], "tta": bool(chosen.get("tta", False)),
            "min_lesion_contrast": float(chosen.get("min_lesion_contrast", 0.0)),
            "min_lesion_spread": float(chosen.get("min_lesion_spread", 0.0)),
            "objective": chosen["record"]["objective"],
            "before": chosen["record"]["before"], "after": chosen["record"]["after"],
            "seed": recipe.heldout_seed + CALIBRATION_SEED_OFFSET, "cases": len(chosen["record"]["cases"])}


def _score_heldout_anatomy(recipe: Recipe, work: Path, model_dir: Path, folds: List[str], tag: str, env: Dict[str, str], np_: str,
                           device: str) -> Dict[str, Any]:
    """The anatomy model's held-out figures: per case Dice of each anatomy class (and of the brain), averaged."""
    from deepwml.anatomy.cleanup import lesions_to_tissue
    from deepwml.evaluation.label_maps import score_label_maps

    heldout = _predict_heldout(recipe, work, model_dir, folds, tag, env, np_, device)
    # a lesion-aware model's lesions are scored as the tissue its map gives them (the held-out labels have no lesion class)
    summary = score_label_maps(heldout / "labelsTr", _heldout_folder(work, tag, checkpoint=recipe.checkpoint), ANATOMY_SCORES,
                               prediction_map=lesions_to_tissue)
    write_json(_heldout_folder(work, tag, "heldout_report", recipe.checkpoint) / "summary.json", summary)
    _log("held-out Dice (mean over cases): " + ", ".join(f"{k} {v:.3f}" for k, v in summary["mean_dice"].items() if v is not None))
    return {"heldout_cases": summary["cases"], **{f"{k}_dice": v for k, v in summary["mean_dice"].items()}}


def _score_heldout(recipe: Recipe, work: Path, model_dir: Path, folds: List[str], tag: str, env: Dict[str, str], np_: str,
                   device: str) -> Dict[str, Any]:
    """Predict and evaluate a synthetic set drawn with another seed; returns the headline figures."""
    heldout = _predict_heldout(recipe, work, model_dir, folds, tag, env, np_, device)
    predictions = _heldout_folder(work, tag, checkpoint=recipe.checkpoint)
    report = _heldout_folder(work, tag, "heldout_report", recipe.checkpoint)
    _run("evaluate", ["-ref", str(heldout / "labelsTr"), "-pred", str(predictions), "-d", str(HELDOUT_ID), "-o", str(report)], env)
    summary = read_json(report / "summary.json")
    slices, cases = summary["slices"]["overall"], summary["cases"]["overall"]
    return {
        "heldout_cases": int(read_json(heldout / "dataset.json")["numTraining"]),
        "slice_median_dice": slices["dice"]["median"],
        "slice_median_sensitivity": slices["sensitivity"]["median"],
        "slice_median_precision": slices["precision"]["median"],
        "case_mean_dice": cases["dice"]["mean"],
        "case_median_hd95_mm": cases["hd95_mm"]["median"],
        "candidate_ece": (summary.get("calibration") or {}).get("candidate_voxels", {}).get("ece"),
    }


def install_builtin(model_dir: Path, recipe: Recipe, record: Dict[str, Any], target: Path) -> None:
    """Export the trained fold(s) (weights only, checksummed) and install them as the package's shipped model."""
    from deepwml.inference.packaging import install_as_folder
    from deepwml.pretrained.model_card import model_card

    install_as_folder(model_dir, recipe.folds[:1] if recipe.distill else recipe.folds, recipe.checkpoint,
                      model_card(recipe, record), target)
    _log(f"installed the model in {target}")
