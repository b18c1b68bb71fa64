"""Run the whole pipeline through the public command-line tools, resumably, within a time budget."""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

from deepwml.utils.atomic import read_json, write_text
from deepwml.utils.commands import run_command

DATASET_ID = 501
DATASET_NAME = "Synth"
DATASET = f"Dataset{DATASET_ID:03d}_{DATASET_NAME}"


@dataclass
class DemoSettings:
    """What the demo runs; derived from the command line."""

    workdir: Path
    minutes: float = 15.0
    device: str = "auto"
    scale: float = 0.1
    plan: Optional[str] = None
    n_jobs: int = 2
    seed: int = 0


def _log(message: str) -> None:
    print(f"[deepwml_demo] {message}", flush=True)


def _run(module: str, args: List[str], env: dict) -> None:
    """Run one public command."""
    run_command(module, args, env, "deepwml_demo")


def cuda_available() -> bool:
    """True when torch sees a CUDA device."""
    import torch

    return torch.cuda.is_available()


def run_demo(settings: DemoSettings) -> Path:
    """Run every stage; return the path of report.html."""
    work = settings.workdir.resolve()
    raw, pre, res = work / "raw", work / "preprocessed", work / "results"
    env = dict(os.environ, DEEPWML_RAW=str(raw), DEEPWML_PREPROCESSED=str(pre), DEEPWML_RESULTS=str(res))
    on_gpu = settings.device.startswith("cuda") or (settings.device == "auto" and cuda_available())
    plan = settings.plan or ("paper" if on_gpu else "cpu_fast")
    start = time.monotonic()
    d = str(DATASET_ID)
    np_ = str(settings.n_jobs)

    _log(f"work folder {work}; plan {plan}; budget {settings.minutes:g} min")
    _run("make_synthetic", ["--raw", str(raw), "--dataset-id", d, "--name", DATASET_NAME, "--scale", str(settings.scale),
                            "--seed", str(settings.seed), "--test-fraction", "0", "-np", np_], env)
    _run("plan_and_preprocess", ["-d", d, "--preset", plan, "-np", np_], env)

    elapsed = (time.monotonic() - start) / 60
    # what is left after data preparation, minus a reserve for postprocessing, prediction and evaluation; at least a
    # minute, or a quarter of a budget under 4 minutes (a quick look at the pipeline, not a useful model)
    train_minutes = max(min(1.0, settings.minutes / 4), settings.minutes - elapsed - 3.0)
    train_args = ["-d", d, "0", "-p", plan, "--device", settings.device, "--max-minutes", f"{train_minutes:.2f}"]
    fold_dir = res / DATASET / plan / "fold_0"
    # a finished training run is not extended by a second demo run: the marker is written only after it ends
    trained = work / ".training_finished"
    if trained.exists():
        _log(f"training already finished ({fold_dir}); delete {trained} to train further")
    else:
        if (fold_dir / "checkpoint_latest.pth").exists():
            train_args.append("--continue")
        _run("train", train_args, env)
        write_text(trained, f"{plan}\n")
    # as nnU-Net after cross-validation: the mask threshold and lesion filters chosen on the fold's validation cases
    chosen = work / ".postprocessing_chosen"
    if not chosen.exists():
        _run("find_postprocessing", ["-d", d, "-p", plan, "-f", "0", "--device", settings.device], env)
        write_text(chosen, f"{plan}\n")

    splits = read_json(pre / DATASET / "splits.json")
    test_ids = sorted(splits["test"])
    images, labels = work / "test_images", work / "test_labels"
    _link_cases(raw / DATASET, test_ids, images, labels)
    predictions = work / "predictions"
    # the demo's own folders: masks an earlier DeepWML made with other defaults are predicted anew, not refused
    again = ["--overwrite-if-changed"]
    _run("predict", ["-i", str(images), "-o", str(predictions), "-d", d, "-p", plan, "-f", "0", "--device", settings.device]
         + again, env)
    # the model shipped with DeepWML on the same test cases, so that the report compares the two pair by pair
    shipped, shipped_report = work / "predictions_shipped_model", work / "report_shipped_model"
    _run("predict", ["-i", str(images), "-o", str(shipped), "--device", settings.device] + again, env)
    _run("evaluate", ["-ref", str(labels), "-pred", str(shipped), "-d", d, "-o", str(shipped_report)], env)
    report = work / "report"
    _run("evaluate", ["-ref", str(labels), "-pred", str(predictions), "-d", d, "-o", str(report),
                      "--against", str(shipped_report)], env)

    table = report / "table2.md"
    if table.exists():
        print()
        print(table.read_text(encoding="utf-8"))
    _log(f"done in {(time.monotonic() - start) / 60:.1f} min; report: {report / 'report.html'}")
    return report / "report.html"


def _link_cases(dataset: Path, case_ids: List[str], images: Path, labels: Path) -> None:
    """Expose the held-out test cases' images and labels as folders, by symlink (no copies)."""
    ending = read_json(dataset / "dataset.json")["file_ending"]
    for folder, sub in ((images, "imagesTr"), (labels, "labelsTr")):
        folder.mkdir(parents=True, exist_ok=True)
        for cid in case_ids:
            link = folder / f"{cid}{ending}"
            if not link.exists():
                link.symlink_to(dataset / sub / f"{cid}{ending}")
    # a record of what was held out, for the reader of the report
    write_text(images.parent / "test_cases.json", json.dumps(case_ids, indent=1) + "\n")
