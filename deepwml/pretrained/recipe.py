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

from deepwml.utils.atomic import read_json, umask, write_json, write_text
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
    #: cpu_fast with strong intensity augmentation (plans/cpu_fast_robust.json); the network is cpu_fast's
    preset: str = "cpu_fast_robust"
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

    @classmethod
    def defaults(cls, kind: str = "lesion") -> "Recipe":
        """The shipped recipe of a kind of model."""
        if kind not in DATASETS:
            raise DeepWMLError(f"unknown kind of model {kind!r}; choose from {', '.join(DATASETS)}")
        return cls(kind=kind, **(ANATOMY_DEFAULTS if kind == "anatomy" else {}))

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
    work = workdir.resolve()
    raw, pre, res = work / "raw", work / "preprocessed", work / "results"
    env = dict(os.environ, DEEPWML_RAW=str(raw), DEEPWML_PREPROCESSED=str(pre), DEEPWML_RESULTS=str(res))
    record_path = work / "recipe.json"
    open_record(record_path, recipe, GENERATOR_VERSION)
    start = time.monotonic()
    np_ = str(n_jobs)
    (train_id, train_name), _ = recipe.datasets()
    _run("make_synthetic", ["--raw", str(raw), "--dataset-id", str(train_id), "--name", train_name, "--scale", str(recipe.scale),
                            "--seed", str(recipe.seed), "--test-fraction", "0", "-np", np_] + _label_args(recipe), env)
    # the held-out set is drawn with another seed, so no training case is set aside as a test case
    _run("plan_and_preprocess", ["-d", str(train_id), "--preset", recipe.preset, "--test-fraction", "0", "-np", np_], env)
    # a preset may be given as a .json file: the PLAN folder is named after the plan inside
    plan_name = load_preset(recipe.preset).name
    model_dir = res / _dataset(train_id, train_name) / plan_name
    start_args = _start_model(recipe, work, record_path)
    validation = {fold: _train_fold(recipe, fold, train_id, plan_name, model_dir, env, device, start_args) for fold in recipe.folds}
    score = _score_heldout_anatomy if recipe.kind == "anatomy" else _score_heldout
    calibration = None
    if recipe.kind == "lesion" and not recipe.distill:
        calibration = _calibrate(recipe, work, model_dir, list(recipe.folds), env, np_, device)
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
        figures = score(recipe, work, shipped_dir, [fold], DISTILLED, env, np_, device)
    record = read_json(record_path)
    for key in ("teacher_figures", "teacher_validation", "teacher_training_hours"):
        record.pop(key, None)
    record.update(figures=figures, validation=validation, hours=round((time.monotonic() - start) / 3600, 3),
                  training_hours=hours, **extra)
    if calibration is not None:
        record["calibration"] = calibration
    write_json(record_path, record)
    if install_to is not None:
        install_builtin(shipped_dir, recipe, record, install_to)
    return shipped_dir


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
    """A recipe record without its fold(s), whether it distils them and which checkpoint it ships (stages that build
    on the same training)."""
    later = ("fold", "folds", "distill", "checkpoint")
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


def _label_args(recipe: Recipe) -> List[str]:
    """deepwml_make_synthetic's option for the kind's labels."""
    return ["--anatomy"] if recipe.kind == "anatomy" else []


def _predict_heldout(recipe: Recipe, work: Path, model_dir: Path, folds: List[str], tag: str, env: Dict[str, str], np_: str,
                     device: str) -> Path:
    """Synthesise the held-out set (another seed) and predict it with the trained fold(s); returns the dataset folder."""
    raw = work / "raw"
    _, (heldout_id, heldout_name) = recipe.datasets()
    heldout = raw / _dataset(heldout_id, heldout_name)
    _run("make_synthetic", ["--raw", str(raw), "--dataset-id", str(heldout_id), "--name", heldout_name, "--scale",
                            str(recipe.heldout_scale), "--seed", str(recipe.heldout_seed), "--test-fraction", "0", "-np", np_]
         + _label_args(recipe), env)
    # a lesion model's probability maps let deepwml_evaluate measure its calibration; the anatomy map would change
    # no mask here (no --white-matter-only) and cost time
    maps = ["--save-probabilities", "--no-anatomy"] if recipe.kind == "lesion" else []
    _run("predict", ["-i", str(heldout / "imagesTr"), "-o", str(_heldout_folder(work, tag, checkpoint=recipe.checkpoint)), "-m", str(model_dir),
                     "-f", *folds, "--checkpoint", recipe.checkpoint, "--device", device, "--no-qc", *maps], env)
    return heldout


def _calibrate(recipe: Recipe, work: Path, model_dir: Path, folds: List[str], env: Dict[str, str], np_: str,
               device: str) -> Dict[str, Any]:
    """Fit the shipped network(s)' temperatures (deepwml_calibrate) on a synthetic set of a third seed, unless their
    checkpoints hold a calibration of these folds already (a resumed run); the record."""
    from deepwml.inference.model_loading import CHECKPOINT_FILES
    from deepwml.training.checkpoint import read_checkpoint

    checkpoints = [model_dir / f"fold_{fold}" / CHECKPOINT_FILES[recipe.checkpoint] for fold in folds]
    done = [read_checkpoint(path).get("calibration") for path in checkpoints]
    if all(done) and all(d.get("folds") == folds for d in done):
        _log(f"calibrated already (temperatures {done[0]['temperature_below']} / {done[0]['temperature_above']})")
        return {**done[0], "seed": recipe.heldout_seed + CALIBRATION_SEED_OFFSET, "cases": len(done[0]["cases"])}
    raw = work / "raw"
    data = raw / _dataset(CALIBRATION_ID, CALIBRATION_NAME)
    _run("make_synthetic", ["--raw", str(raw), "--dataset-id", str(CALIBRATION_ID), "--name", CALIBRATION_NAME, "--scale",
                            str(recipe.heldout_scale), "--seed", str(recipe.heldout_seed + CALIBRATION_SEED_OFFSET),
                            "--test-fraction", "0", "-np", np_], env)
    _run("calibrate", ["-m", str(model_dir), "-f", *folds, "--checkpoint", recipe.checkpoint, "-i", str(data / "imagesTr"),
                       "-l", str(data / "labelsTr"), "--device", device], env)
    record = read_checkpoint(checkpoints[0])["calibration"]
    return {**record, "seed": recipe.heldout_seed + CALIBRATION_SEED_OFFSET, "cases": len(record["cases"])}


def _score_heldout_anatomy(recipe: Recipe, work: Path, model_dir: Path, folds: List[str], tag: str, env: Dict[str, str], np_: str,
                           device: str) -> Dict[str, Any]:
    """The anatomy model's held-out figures: per case Dice of each anatomy class (and of the brain), averaged."""
    from deepwml.evaluation.label_maps import score_label_maps

    heldout = _predict_heldout(recipe, work, model_dir, folds, tag, env, np_, device)
    summary = score_label_maps(heldout / "labelsTr", _heldout_folder(work, tag, checkpoint=recipe.checkpoint), ANATOMY_SCORES)
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
    from deepwml.inference.packaging import export_model, install_model, replace_dir

    with tempfile.TemporaryDirectory(prefix="deepwml_pretrained_") as tmp:
        zip_path = Path(tmp) / "model.zip"
        export_model(model_dir, zip_path, list(recipe.folds[:1] if recipe.distill else recipe.folds), recipe.checkpoint)
        installed = install_model(zip_path, Path(tmp) / "results")
        write_text(installed / "MODEL_CARD.md", model_card(recipe, record))
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.new.", dir=target.parent))
        try:
            shutil.copytree(installed, staging, dirs_exist_ok=True)
            os.chmod(staging, 0o777 & ~umask())
            replace_dir(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    _log(f"installed the model in {target}")


def _rounded(figures: Dict[str, Any]) -> Dict[str, Any]:
    """Floats to 3 decimals for reading."""
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()}


def _each_fold(values: Dict[str, Any], unit: str = "") -> str:
    """One figure per fold, e.g. 'fold 0 0.712, fold 1 0.705' ('?' when there is none)."""
    return ", ".join(f"fold {fold} {value}{unit}" for fold, value in values.items()) or "?"


def _per_fold(record: Dict[str, Any], key: str) -> str:
    """One validation figure of each fold."""
    return _each_fold({fold: _rounded(summary).get(key, "?") for fold, summary in record.get("validation", {}).items()})


def _validated_text(recipe: Recipe, record: Dict[str, Any]) -> str:
    """Which checkpoint the validation figures are of, when the shipped one is another (--checkpoint latest)."""
    if recipe.checkpoint == "best":
        return ""
    best = {fold: summary.get("epoch", "?") for fold, summary in record.get("validation", {}).items()}
    epochs = f"epoch {next(iter(best.values()))}" if len(best) == 1 else ", ".join(f"fold {f} epoch {e}" for f, e in best.items())
    return f" (of the best checkpoint, {epochs or '?'}; the shipped network is the last, epoch {recipe.epochs})"


def _training_time(record: Dict[str, Any], key: str = "training_hours") -> str:
    """'0.82 h' for one fold, 'fold 0 0.82 h, fold 1 0.79 h' for several (from each fold's log)."""
    hours = record.get(key) or {}
    return f"{next(iter(hours.values()))} h" if len(hours) == 1 else _each_fold(hours, " h")


def _recipe_text(recipe: Recipe, record: Dict[str, Any]) -> str:
    """The recipe section's sentence: folds, schedule, distillation, starting weights, time."""
    r = asdict(recipe)
    schedule = f"{r['epochs']} epochs x {r['iterations']} iterations, seed {r['seed']}, checkpoint `{r['checkpoint']}`"
    if not recipe.distill:
        text = (f"Preset `{r['preset']}`, {recipe.folds_text()} (each 80 % train, 20 % validation), {schedule}; training "
                f"{_training_time(record)} on the machine that made it; the recipe's last call {record.get('hours', '?')} h "
                "(finished stages are skipped).")
    else:
        from deepwml.training.distillation import DEFAULT_WEIGHT

        text = (f"Preset `{r['preset']}`. Teachers: folds {', '.join(recipe.folds)} (each 80 % train, 20 % validation), {schedule}. "
                f"Shipped: one network of the same size distilled from them on fold {recipe.folds[0]}'s split (`deepwml_train "
                f"--distill-from`: loss {1 - DEFAULT_WEIGHT:g} x labels + {DEFAULT_WEIGHT:g} x the teachers' averaged "
                f"probabilities), same schedule. Training on the machine that made it: teachers "
                f"{_training_time(record, 'teacher_training_hours')}, distilled network {_training_time(record)}; the recipe's "
                f"last call {record.get('hours', '?')} h (finished stages are skipped).")
    return text + _start_text(record)


def _start_text(record: Dict[str, Any]) -> str:
    """The starting weights of a recipe run with ``--start-from``, in words ('' when they were random)."""
    start = record.get("start_model")
    if not start:
        return ""
    from deepwml.training.pretrained_weights import FINETUNE_LR_FACTOR

    digests = ", ".join(d[:12] for d in start.get("sha256", []))
    return (f" Every network started from the weights of `{start['source']}` (generator version {start.get('generator_version') or '?'}; "
            f"checkpoint sha256 {digests}; its card is the MODEL_CARD.md of the package version that shipped it), at "
            f"{FINETUNE_LR_FACTOR:g} x the plan's learning rate (`deepwml_train --pretrained`), not from random weights.")


def _heldout_text(figures: Dict[str, Any]) -> str:
    """The held-out headline figures in words."""
    fig = _rounded(figures)
    return (f"median per-slice Dice {fig.get('slice_median_dice', '?')}, sensitivity {fig.get('slice_median_sensitivity', '?')}, "
            f"precision {fig.get('slice_median_precision', '?')}; case mean Dice {fig.get('case_mean_dice', '?')}, median HD95 "
            f"{fig.get('case_median_hd95_mm', '?')} mm"
            + (f"; ECE over voxels with probability >= 0.05 {fig['candidate_ece']}" if fig.get("candidate_ece") is not None else ""))


def _card_header(recipe: Recipe, record: Dict[str, Any], title: str, labels: str) -> List[str]:
    """The model card's title, data and recipe sections."""
    r = asdict(recipe)
    option = " --anatomy" if recipe.kind == "anatomy" else ""
    return [
        f"# DeepWML pretrained model: {title}",
        "",
        f"Made by `deepwml_train_pretrained{option}` (deepwml/pretrained/recipe.py); the same command with the settings below",
        "reproduces it. Loaded weights-only; the manifest holds each file's SHA-256.",
        "",
        "## Training data",
        f"Synthetic only: `deepwml_make_synthetic{option}` generator version {record.get('generator_version')}, seed {r['seed']}, "
        f"scale {r['scale']} (all twelve centres of Zhang, Duan et al. 2021, MS / NMOSD / CSVD), no real scans; {labels}.",
        "",
        "## Recipe",
        _recipe_text(recipe, record),
        "",
    ]


def model_card(recipe: Recipe, record: Dict[str, Any]) -> str:
    """The model card's Markdown: data, recipe, time, figures, limits."""
    if recipe.kind == "anatomy":
        return anatomy_model_card(recipe, record)
    figures = record.get("figures", {})
    r = asdict(recipe)
    teachers = []
    if recipe.distill:
        teachers = [f"- The teachers ({recipe.folds_text()}) on the same set: {_heldout_text(record.get('teacher_figures', {}))}.",
                    f"- The teachers' validation, median per-slice Dice: "
                    f"{_per_fold({'validation': record.get('teacher_validation', {})}, 'median_dice')}"]
    lines = _card_header(recipe, record, "white-matter hyperintensities on thick-slice 2D FLAIR", "labels: the lesion masks") + [
        "## Figures",
        f"- Validation, median per-slice Dice: {_per_fold(record, 'median_dice')}{_validated_text(recipe, record)}",
        f"- Held-out synthetic set (seed {r['heldout_seed']}, {figures.get('heldout_cases', '?')} cases; {recipe.shipped_text()}): "
        f"{_heldout_text(figures)}.",
        *teachers,
        *_calibration_lines(record),
        "",
        "## Limits",
        "- Trained on synthetic scans only: expect lower accuracy on real scans than on the figures above; measure it on your own",
        "  labelled scans (`deepwml_evaluate`) and fine-tune with `deepwml_train ... --pretrained builtin` when you have a few.",
        "- 2D axial FLAIR, 3-8 mm slices; not for 3D isotropic FLAIR, other contrasts, children or tumours.",
        "- Research use; not a medical device.",
        "",
    ]
    return "\n".join(lines)


def _calibration_lines(record: Dict[str, Any]) -> List[str]:
    """The card's line on the probability calibration (none before calibration existed)."""
    c = record.get("calibration")
    if not c:
        return []
    return [f"- Probabilities calibrated (`deepwml_calibrate`) on {c['cases']} synthetic cases (seed {c['seed']}): temperatures "
            f"{c['temperature_below']} below and {c['temperature_above']} above the 0.5 threshold (masks unchanged); ECE over "
            f"voxels with probability >= 0.05 on those cases {c['candidate_ece_before']} -> {c['candidate_ece_after']}."]


def anatomy_model_card(recipe: Recipe, record: Dict[str, Any]) -> str:
    """The anatomy model's card: classes, data, recipe, held-out Dice per class, limits."""
    fig = _rounded(record.get("figures", {}))
    r = asdict(recipe)
    scores = ", ".join(f"{name.replace('_', ' ')} {fig.get(f'{name}_dice', '?')}" for name in ANATOMY_SCORES)
    lines = _card_header(recipe, record, "anatomy from thick-slice 2D FLAIR (issue #14)",
                         "labels: the generator's anatomy (0 background, 1 white matter and deep grey, 2 lateral ventricle, "
                         "3 cortex, 4 infratentorial: cerebellum and brainstem)") + [
        "## Figures",
        f"- Validation: median over cases of the mean foreground Dice, {_per_fold(record, 'median_dice')}",
        f"- Held-out synthetic set (seed {r['heldout_seed']}, {fig.get('heldout_cases', '?')} cases), Dice per case on the "
        f"input's grid, mean over cases: {scores} (brain = white matter + cortex + infratentorial).",
        "",
        "## Use",
        "`deepwml_predict` runs it beside the lesion model when this install ships it (`--no-anatomy` to skip, "
        "`--anatomy-model` for another one, `--save-anatomy` to write CASE_anatomy).",
        "",
        "## Limits",
        "- Trained on synthetic anatomy only: the classes follow the generator's model of the brain, not an atlas; check it",
        "  on your scans before relying on lesion locations.",
        "- 2D axial FLAIR, 3-8 mm slices; coarse (1.5 mm in-plane): for lesion location classes and volumes, not morphometry.",
        "- Research use; not a medical device.",
        "",
    ]
    return "\n".join(lines)
