"""How the shipped model is made, as one resumable command: synthesise, plan, train, score on another seed, install.

Every stage is a public command (the same ones a user runs), each resumable, so an interrupted run is continued
by running the same command again. What was done is recorded in ``recipe.json`` and the model card.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from deepwml.utils.atomic import read_json, umask, write_json, write_text
from deepwml.utils.commands import run_command
from deepwml.utils.errors import DeepWMLError

TRAIN_ID, TRAIN_NAME = 510, "SynthPretrain"
HELDOUT_ID, HELDOUT_NAME = 511, "SynthHeldout"


@dataclass
class Recipe:
    """Everything that determines the shipped model (recorded in its card)."""

    seed: int = 0
    scale: float = 0.25
    preset: str = "cpu_fast"
    fold: str = "0"
    epochs: int = 60
    iterations: int = 50
    heldout_seed: int = 1000
    heldout_scale: float = 0.05
    checkpoint: str = "best"


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

    work = workdir.resolve()
    raw, pre, res = work / "raw", work / "preprocessed", work / "results"
    env = dict(os.environ, DEEPWML_RAW=str(raw), DEEPWML_PREPROCESSED=str(pre), DEEPWML_RESULTS=str(res))
    record_path = work / "recipe.json"
    if record_path.is_file():
        earlier = read_json(record_path)
        if earlier.get("recipe") != asdict(recipe):
            raise DeepWMLError("this work folder was started with another recipe; use another --workdir or the same settings", record_path)
    else:
        write_json(record_path, {"recipe": asdict(recipe), "generator_version": GENERATOR_VERSION})
    start = time.monotonic()
    np_ = str(n_jobs)
    _run("make_synthetic", ["--raw", str(raw), "--dataset-id", str(TRAIN_ID), "--name", TRAIN_NAME, "--scale", str(recipe.scale),
                            "--seed", str(recipe.seed), "--test-fraction", "0", "-np", np_], env)
    # the held-out set is drawn with another seed, so no training case is set aside as a test case
    _run("plan_and_preprocess", ["-d", str(TRAIN_ID), "--preset", recipe.preset, "--test-fraction", "0", "-np", np_], env)
    model_dir = res / _dataset(TRAIN_ID, TRAIN_NAME) / recipe.preset
    fold_dir = model_dir / f"fold_{recipe.fold}"
    train_args = ["-d", str(TRAIN_ID), recipe.fold, "-p", recipe.preset, "--epochs", str(recipe.epochs),
                  "--iterations", str(recipe.iterations), "--seed", str(recipe.seed), "--device", device]
    finished = fold_dir / "validation" / "summary.json"
    if not finished.is_file():
        if (fold_dir / "checkpoint_latest.pth").is_file():
            train_args.append("--continue")
        _run("train", train_args, env)
    figures = _score_heldout(recipe, work, model_dir, env, np_, device)
    record = read_json(record_path)
    record.update(figures=figures, validation=read_json(finished), hours=round((time.monotonic() - start) / 3600, 3))
    write_json(record_path, record)
    if install_to is not None:
        install_builtin(model_dir, recipe, record, install_to)
    return model_dir


def _score_heldout(recipe: Recipe, work: Path, model_dir: Path, env: Dict[str, str], np_: str, device: str) -> Dict[str, Any]:
    """Predict and evaluate a synthetic set drawn with another seed; returns the headline figures."""
    raw = work / "raw"
    heldout = raw / _dataset(HELDOUT_ID, HELDOUT_NAME)
    _run("make_synthetic", ["--raw", str(raw), "--dataset-id", str(HELDOUT_ID), "--name", HELDOUT_NAME, "--scale",
                            str(recipe.heldout_scale), "--seed", str(recipe.heldout_seed), "--test-fraction", "0", "-np", np_], env)
    predictions, report = work / "heldout_predictions", work / "heldout_report"
    _run("predict", ["-i", str(heldout / "imagesTr"), "-o", str(predictions), "-m", str(model_dir), "-f", recipe.fold,
                     "--checkpoint", recipe.checkpoint, "--device", device, "--no-qc"], env)
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
    }


def install_builtin(model_dir: Path, recipe: Recipe, record: Dict[str, Any], target: Path) -> None:
    """Export the trained fold (weights only, checksummed) and install it as the package's shipped model."""
    from deepwml.inference.packaging import export_model, install_model, replace_dir

    with tempfile.TemporaryDirectory(prefix="deepwml_pretrained_") as tmp:
        zip_path = Path(tmp) / "model.zip"
        export_model(model_dir, zip_path, [recipe.fold], recipe.checkpoint)
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


def model_card(recipe: Recipe, record: Dict[str, Any]) -> str:
    """The model card's Markdown: data, recipe, time, figures, limits."""
    fig, val = _rounded(record.get("figures", {})), _rounded(record.get("validation", {}))
    r = asdict(recipe)
    lines = [
        "# DeepWML pretrained model: white-matter hyperintensities on thick-slice 2D FLAIR",
        "",
        "Made by `deepwml_train_pretrained` (deepwml/pretrained/recipe.py); the same command with the settings below",
        "reproduces it. Loaded weights-only; the manifest holds each file's SHA-256.",
        "",
        "## Training data",
        f"Synthetic only: `deepwml_make_synthetic` generator version {record.get('generator_version')}, seed {r['seed']}, "
        f"scale {r['scale']} (all twelve centres of Zhang, Duan et al. 2021, MS / NMOSD / CSVD), no real scans.",
        "",
        "## Recipe",
        f"Preset `{r['preset']}`, fold {r['fold']} (80 % train, 20 % validation), {r['epochs']} epochs x {r['iterations']} "
        f"iterations, seed {r['seed']}, checkpoint `{r['checkpoint']}`; total time {record.get('hours', '?')} h on the machine that made it.",
        "",
        "## Figures",
        f"- Validation (fold {r['fold']}), median per-slice Dice: {val.get('median_dice', '?')}",
        f"- Held-out synthetic set (seed {r['heldout_seed']}, {fig.get('heldout_cases', '?')} cases): median per-slice Dice "
        f"{fig.get('slice_median_dice', '?')}, sensitivity {fig.get('slice_median_sensitivity', '?')}, precision "
        f"{fig.get('slice_median_precision', '?')}; case mean Dice {fig.get('case_mean_dice', '?')}, median HD95 "
        f"{fig.get('case_median_hd95_mm', '?')} mm.",
        "",
        "## Limits",
        "- Trained on synthetic scans only: expect lower accuracy on real scans than on the figures above; measure it on your own",
        "  labelled scans (`deepwml_evaluate`) and fine-tune with `deepwml_train ... --pretrained builtin` when you have a few.",
        "- 2D axial FLAIR, 3-8 mm slices; not for 3D isotropic FLAIR, other contrasts, children or tumours.",
        "- Research use; not a medical device.",
        "",
    ]
    return "\n".join(lines)
