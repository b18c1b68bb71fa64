"""The training loop: one fold of one dataset with one plan, resumable, single process or DDP under torchrun.

Everything the loop needs lives in the small modules beside this one (network, losses, sampling, dataloader,
augmentation, device, optim, checkpoint, validation, progress, distributed); this file only wires them up.
"""
from __future__ import annotations

import dataclasses
import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch

from deepwml.inference.predictor import SlicePredictor
from deepwml.models import build_network
from deepwml.planning.plan import Plan, TrainingPlan
from deepwml.training import distributed as D
from deepwml.utils.allocator import allocator_in_use
from deepwml.training.augmentation import build_transforms
from deepwml.training.budget import TimeBudget
from deepwml.training.checkpoint import (
    BEST,
    LATEST,
    check_resumable,
    check_same_plan,
    load_checkpoint,
    model_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from deepwml.training.dataloader import BatchSpec, epoch_batches, worker_count
from deepwml.training.device import DeviceSetup, make_scaler, setup_device
from deepwml.training.distillation import DEFAULT_WEIGHT, Teacher, distillation_loss, load_teacher, reload_teacher, same_teacher
from deepwml.training.losses import training_loss
from deepwml.training.network import count_parameters
from deepwml.training.optim import build_optimizer, learning_rate, set_learning_rate
from deepwml.training.preprocessed import Fold, PreprocessedDataset, fold_folder_name
from deepwml.training.pretrained_weights import FINETUNE_LR_FACTOR, load_pretrained
from deepwml.training.progress import plot_progress, write_log
from deepwml.training.sampling import build_slice_index
from deepwml.training.validation import DiceEMA, ValidationSlices, collect_validation_slices, validate, validate_classes
from deepwml.utils.atomic import write_bytes, write_json
from deepwml.utils.errors import DeepWMLError

#: nnU-Net's gradient-norm clip; it only bites on the rare exploding step
GRAD_CLIP = 12.0


@dataclass
class TrainOptions:
    """What deepwml_train was asked to do."""

    dataset: str
    fold: Fold
    preprocessed_root: Path
    results_root: Path
    plan_name: str = "paper"
    device: str = "auto"
    resume: bool = False
    epochs: Optional[int] = None
    iterations: Optional[int] = None
    num_workers: Optional[int] = None
    seed: int = 0
    bf16: bool = True
    #: CPU threads per process (default: physical cores / processes on this node)
    threads: Optional[int] = None
    progress: Optional[bool] = None
    #: seconds without a batch from the augmentation workers before giving up
    stall_timeout: float = 300.0
    #: wall-clock budget: fewer epochs (and a schedule that ends with them) when the plan's would not fit
    max_minutes: Optional[float] = None
    #: start from these weights: 'builtin', a PLAN folder, a fold folder or a checkpoint file
    pretrained: Optional[str] = None
    #: override the plan's learning rate (with --pretrained the default is FINETUNE_LR_FACTOR x the plan's)
    learning_rate: Optional[float] = None
    #: distil this trained model ('builtin' or a PLAN folder) into the network: its averaged probabilities join the labels
    distill_from: Optional[str] = None
    #: the teacher's folds (default: every fold it has)
    distill_folds: Optional[List[str]] = None
    #: the teacher's share of the loss (default DEFAULT_WEIGHT; on --continue, the run's own)
    distill_weight: Optional[float] = None


def effective_training(plan: Plan, opts: TrainOptions) -> TrainingPlan:
    """plan.training with the command line's --epochs/--iterations/--num-workers/--lr (and --pretrained's rate) applied."""
    learning_rate = opts.learning_rate
    if learning_rate is None and opts.pretrained is not None:
        learning_rate = plan.training.learning_rate * FINETUNE_LR_FACTOR
    if learning_rate is not None and not learning_rate > 0:
        raise DeepWMLError(f"--lr must be positive, got {learning_rate}")
    overrides = {k: v for k, v in (("epochs", opts.epochs), ("iterations_per_epoch", opts.iterations),
                                   ("num_workers", opts.num_workers), ("learning_rate", learning_rate)) if v is not None}
    for key in ("epochs", "iterations_per_epoch"):
        if key in overrides and overrides[key] < 1:
            raise DeepWMLError(f"--{key.split('_')[0]} must be at least 1, got {overrides[key]}")
    return dataclasses.replace(plan.training, **overrides)


class Trainer:
    """Trains one fold; ``run()`` does everything, resuming from checkpoint_latest.pth with ``resume``."""

    def __init__(self, opts: TrainOptions, log: Callable[[str], None] = print) -> None:
        self.opts = opts
        self.ctx = D.context_from_env()
        self._log = log
        self.data = PreprocessedDataset(opts.preprocessed_root, opts.dataset, opts.plan_name)
        self.plan = self.data.plan
        self.plan_hash = self.plan.hash()
        self.training = effective_training(self.plan, opts)
        self.cases = self.data.fold_cases(opts.fold)
        if not self.cases.train:
            raise DeepWMLError(f"fold {opts.fold} has no training cases", self.data.splits_path)
        self.data.check_cache(sorted(set(self.cases.train) | set(self.cases.val)))
        self.plan_out = Path(opts.results_root) / self.data.name / self.data.plan_name
        self.out = self.plan_out / fold_folder_name(opts.fold)
        self.setup: DeviceSetup = setup_device(opts.device, opts.bf16, self.ctx.local_rank, self.ctx.local_world_size, opts.threads)
        D.init_process_group(self.ctx, self.setup.device.type == "cuda")
        self.local_batch = D.local_batch_size(self.training.batch_size, self.ctx)
        self.history: List[Dict[str, Any]] = []
        self.epoch = 0
        self.ema = DiceEMA(self.training.ema_alpha)
        self.best_ema_dice = -math.inf
        #: where the starting weights came from (None: random initialisation); kept in every checkpoint
        self.pretrained_origin: Optional[Dict[str, Any]] = None
        #: the model being distilled into this network (None: labels only); reloaded from the checkpoint on --continue
        self.teacher: Optional[Teacher] = None
        #: epochs this run aims for: the plan's, or fewer when --max-minutes would not fit them
        self.target_epochs = self.training.epochs
        self.budget = TimeBudget(opts.max_minutes, self.training.epochs, self.training.iterations_per_epoch)
        # made by build() (network, optimiser, data) and run() (where this run started); None until then
        self.net: Any = None
        self.model: Any = None
        self.optimizer: Optional[torch.optim.Optimizer] = None
        self.scaler: Optional[torch.amp.GradScaler] = None
        self.index: Any = None
        self.transform: Any = None
        self.workers = 0
        self.val_slices: Optional[ValidationSlices] = None
        self.val_predictor: Optional[SlicePredictor] = None
        self.steps_before_bar = 0

    @property
    def ema_dice(self) -> Optional[float]:
        """Moving average of the validation median per-slice Dice (None before the first validation)."""
        return self.ema.value

    def log(self, message: str) -> None:
        """Print on rank 0 only."""
        if self.ctx.is_main:
            self._log(message)

    # ---- set-up ---------------------------------------------------------------------------------------------
    def build(self) -> None:
        """Model, optimiser, scaler, data index and validation slices."""
        seed_everything(self.opts.seed)
        self.net = build_network(self.plan.network).to(self.setup.device)
        if self.setup.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.net.return_deep_supervision = self.plan.network.deep_supervision
        if self.opts.pretrained is not None:
            self.load_pretrained(self.opts.pretrained)
        if self.opts.distill_from is not None:
            weight = DEFAULT_WEIGHT if self.opts.distill_weight is None else self.opts.distill_weight
            self.teacher = load_teacher(self.opts.distill_from, self.plan, self.setup, self.opts.distill_folds, weight)
        elif self._distill_options_given() and not self.opts.resume:
            raise DeepWMLError("--distill-weight and --distill-folds go with --distill-from")
        self.model = D.wrap_model(self.net, self.ctx, self.setup.device)
        self.optimizer = build_optimizer(self.net, self.training)
        self.scaler = make_scaler(self.setup)
        if self.ctx.local_rank == 0:
            self.data.unpack(sorted(set(self.cases.train) | set(self.cases.val)))
        D.barrier(self.ctx)
        self.index = build_slice_index((cid, self.data.load(cid)[1]) for cid in self.cases.train)
        self.transform = build_transforms(self.training.augmentation, self.training.patch_size)
        self.workers = worker_count(self.training.num_workers, self.setup.device.type == "cuda")
        multiclass = self.plan.network.num_classes > 2
        self.val_slices = (
            collect_validation_slices(self.cases.val, self.data.load, self.net.input_spec, multiclass) if self.ctx.is_main else None
        )
        # validation predicts as deepwml_predict does; the network stays the trainer's (device, layout, mode)
        self.val_predictor = SlicePredictor([self.net], self.plan, self.setup, tta=False, prepare=False)

    def load_pretrained(self, spec: str) -> None:
        """Start from another model's weights (same network); --continue later replaces them by the checkpoint's."""
        weights, notes = load_pretrained(spec, self.plan)
        try:
            self.net.load_state_dict(weights.state)
        except RuntimeError as e:
            raise DeepWMLError(f"--pretrained: weights do not fit this plan's network ({str(e).splitlines()[0][:200]})",
                               weights.origin["file"]) from None
        self.pretrained_origin = weights.origin
        for note in notes:
            self.log(f"note: {note}")

    def check_output_folder(self) -> None:
        """Refuse to overwrite a trained fold silently."""
        if not self.opts.resume and (self.out / LATEST).exists():
            raise DeepWMLError(
                f"already holds a trained model ({LATEST}); add --continue to resume it, or delete the folder to start over",
                self.out,
            )

    def resume(self) -> None:
        """Load checkpoint_latest.pth (rank 0 reads, every rank receives) and restore every state."""
        path = self.out / LATEST
        present = D.broadcast_object(path.is_file(), self.ctx)
        if not present:
            self.log(f"no {LATEST} in {self.out}; starting from scratch")
            return
        ckpt = D.broadcast_object(load_checkpoint(path) if self.ctx.is_main else None, self.ctx)
        check_resumable(ckpt, path)
        check_same_plan(ckpt, self.plan_hash, path)
        try:
            self.restore(ckpt)
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            # a file that loads weights-only but whose states do not fit this run
            raise DeepWMLError(f"cannot continue from this checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:200]})", path) from None
        if ckpt.get("loader", {}).get("world_size", 1) != self.ctx.world_size:
            self.log("note: resuming with a different number of processes; the data order differs from the original run")
        self.log(f"resumed from {path} after epoch {self.epoch}")

    def restore(self, ckpt: Dict[str, Any]) -> None:
        """Every state of a run from its checkpoint: weights, optimiser, scaler, epoch, moving average, history, RNGs."""
        self.net.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.epoch = int(ckpt["epoch"])
        self.ema = DiceEMA(self.training.ema_alpha, *ckpt.get("ema_state", (0.0, 0)))
        self.best_ema_dice = ckpt.get("best_ema_dice", -math.inf)
        self.history = list(ckpt.get("history", []))
        self.pretrained_origin = ckpt.get("pretrained")
        self.restore_teacher(ckpt.get("distilled_from"))
        started_with = (ckpt.get("training_overrides") or {}).get("learning_rate")
        if started_with is not None and self.opts.learning_rate is None:
            # a run continues with the rate it started with (a fine-tuning run need not repeat --pretrained)
            self.training = dataclasses.replace(self.training, learning_rate=float(started_with))
        set_rng_state(ckpt["rng"])

    def _distill_options_given(self) -> bool:
        """Whether --distill-weight or --distill-folds was given."""
        return self.opts.distill_weight is not None or bool(self.opts.distill_folds)

    def restore_teacher(self, recorded: Optional[Dict[str, Any]]) -> None:
        """On --continue: the run's own teacher, reloaded and checked; a different one, or adding or dropping one, is refused."""
        where = self.out / LATEST
        if recorded is None:
            if self.teacher is not None or self._distill_options_given():
                raise DeepWMLError("this run was trained without a teacher; --distill-* options cannot join it on --continue "
                                   "(start a new run to distil)", where)
            return
        if self.teacher is None:
            weight, folds = self.opts.distill_weight, self.opts.distill_folds
            if weight is not None and float(weight) != float(recorded.get("weight", -1)):
                raise DeepWMLError(f"this run distils with weight {recorded.get('weight')}; --distill-weight cannot change it", where)
            if folds and [str(f) for f in folds] != list(recorded.get("folds", [])):
                raise DeepWMLError(f"this run distils folds {', '.join(recorded.get('folds', []))}; --distill-folds cannot change them", where)
            self.teacher = reload_teacher(recorded, self.plan, self.setup, where)
        elif not same_teacher(self.teacher.origin, recorded):
            raise DeepWMLError(f"this run was distilled from {recorded.get('folder')} (folds {', '.join(recorded.get('folds', []))}, "
                               f"weight {recorded.get('weight')}); continue with that teacher, or without --distill-from", where)

    def write_plan_files(self) -> None:
        """plans.json, dataset.json and fingerprint.json beside the folds, for prediction."""
        for name, src in self.data.extra_files().items():
            if src.is_file():
                write_bytes(self.plan_out / name, src.read_bytes())

    # ---- the loop -------------------------------------------------------------------------------------------
    def run(self) -> Dict[str, Any]:
        """Train until ``epochs`` are done; returns a summary."""
        self.check_output_folder()
        self.build()
        if self.opts.resume:
            self.resume()
        if self.ctx.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            self.write_plan_files()
            self.announce()
        self.steps_before_bar = self.epoch * self.training.iterations_per_epoch
        self.budget.start_loop(self.epoch)
        bar = self.progress_bar()
        try:
            while self.epoch < self.target_epochs:
                self.train_one_epoch(bar)
        except KeyboardInterrupt:
            bar.close()
            self.log(f"\ninterrupted during epoch {self.epoch + 1}; {self.out / LATEST} holds {self.epoch} completed epoch(s). "
                     f"Resume with: deepwml_train -d {self.opts.dataset} {self.opts.fold} -p {self.opts.plan_name} --continue"
                     + (" (the teacher is reloaded from the checkpoint)" if self.teacher is not None else ""))
            raise
        bar.close()
        summary = self.final_validation() if self.ctx.is_main else {}
        D.barrier(self.ctx)
        return {"folder": self.out, "epochs": self.epoch, "ema_dice": self.ema_dice, "best_ema_dice": self.best_ema_dice, **summary}

    def announce(self) -> None:
        """What is about to happen, in a few lines."""
        t, n = self.training, self.cases
        self.log(f"dataset {self.data.name}, plan {self.data.plan_name}, fold {self.opts.fold}: "
                 f"{len(n.train)} training cases ({self.index.n_slices} slices, {self.index.n_components} lesion components), "
                 f"{len(n.val)} validation cases" + (" (= the training cases)" if n.val_is_train else ""))
        self.log(f"network: {self.net.spec.describe()}, {count_parameters(self.net) / 1e6:.2f} M parameters; "
                 f"device {self.setup.describe()}; allocator {allocator_in_use()}; {self.workers} augmentation worker(s)")
        world = f" = {self.ctx.world_size} × ~{self.local_batch}" if self.ctx.enabled else ""
        self.log(f"{t.epochs} epochs × {t.iterations_per_epoch} iterations, batch {t.batch_size}{world}, patch {t.patch_size}, "
                 f"{t.optimizer} lr {t.learning_rate:g} ({t.lr_schedule}); output {self.out}")
        if self.pretrained_origin:
            o = self.pretrained_origin
            self.log(f"fine-tuning from {o['source']} ({o['file']}, plan {o.get('plan_name')}, epoch {o.get('epoch')}, "
                     f"sha256 {str(o['sha256'])[:12]})")
        if self.teacher is not None:
            o = self.teacher.origin
            self.log(f"distilling {o['source']} ({o['folder']}, folds {', '.join(o['folds'])}): loss = {1 - o['weight']:g} x labels "
                     f"+ {o['weight']:g} x the teacher's averaged probabilities")

    def progress_bar(self):
        """One bar over every remaining step, with ETA (rank 0, a terminal or --progress)."""
        from tqdm import tqdm

        enabled = self.ctx.is_main and (self.opts.progress or (self.opts.progress is None and sys.stderr.isatty()))
        total = (self.target_epochs - self.epoch) * self.training.iterations_per_epoch
        return tqdm(total=total, desc="train", unit="it", disable=not enabled, file=sys.stderr, dynamic_ncols=True)

    def batch_spec(self, epoch: int) -> BatchSpec:
        """What this rank draws its batches of ``epoch`` from."""
        t = self.training
        spec = self.net.input_spec
        return BatchSpec(self.data.cache_dir, self.index, tuple(t.patch_size), self.local_batch, t.foreground_oversampling,
                         self.opts.seed, self.ctx.rank, epoch, t.iterations_per_epoch,
                         spec.channels, spec.context_slices, spec.padding)

    def train_one_epoch(self, bar) -> None:
        """Optimise for one epoch, validate, checkpoint and log."""
        t = self.training
        self.model.train()
        started = time.perf_counter()
        losses = []
        for i, batch in enumerate(epoch_batches(self.batch_spec(self.epoch), self.transform, self.workers, self.opts.stall_timeout)):
            # the target (and so the schedule's length) may shrink under --max-minutes
            lr = learning_rate(t, self.epoch * t.iterations_per_epoch + i, self.target_epochs * t.iterations_per_epoch)
            losses.append(self.train_step(batch, lr))
            bar.update(1)
            bar.set_postfix(epoch=self.epoch + 1, loss=f"{losses[-1]:.3f}",
                            ema_dice="-" if self.ema_dice is None else f"{self.ema_dice:.3f}")
            self.retarget(bar, self.budget.after_step(self.epoch, i))
        seconds = time.perf_counter() - started
        train_loss = D.mean_over_ranks(float(np.mean(losses)), self.ctx)
        self.epoch += 1
        if self.ctx.is_main:
            self.end_of_epoch(train_loss, lr, seconds)
        D.barrier(self.ctx)
        self.retarget(bar, self.budget.after_epoch(self.epoch))

    def retarget(self, bar, answer: Optional[int]) -> None:
        """Apply the time budget's answer at one of its decision points (rank 0's, with several processes)."""
        if answer is None:
            return
        target = D.broadcast_object(answer, self.ctx)
        if target == self.target_epochs:
            return
        if target == self.epoch:
            self.log(f"time budget of {self.opts.max_minutes:g} min reached after epoch {self.epoch}")
        else:
            self.log(f"time budget of {self.opts.max_minutes:g} min: training {target} instead of {self.target_epochs} epochs")
        self.target_epochs = target
        bar.total = target * self.training.iterations_per_epoch - self.steps_before_bar
        bar.refresh()

    def train_step(self, batch: Dict[str, np.ndarray], lr: float) -> float:
        """One optimisation step; returns the loss."""
        device = self.setup.device
        x = _to_device(batch["data"], device, self.setup.channels_last)
        y = _to_device(batch["seg"], device, False)
        set_learning_rate(self.optimizer, lr)
        self.optimizer.zero_grad(set_to_none=True)
        with self.setup.autocast():
            out = self.model(x)
        if self.teacher is None:
            loss = training_loss(out, y, self.training.loss)
        else:
            loss = distillation_loss(out, y, self.teacher.probabilities(x), self.teacher.weight, self.training.loss)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.net.parameters(), GRAD_CLIP)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return float(loss.detach())

    def run_validation(self) -> Dict[str, Any]:
        """Per-slice metrics (multi-class plans: per-case mean foreground Dice) of the current weights on the validation slices."""
        if self.plan.network.num_classes > 2:
            return validate_classes(self.val_predictor, self.val_slices)
        return validate(self.val_predictor, self.val_slices, self.plan.inference.threshold)

    def end_of_epoch(self, train_loss: float, lr: float, seconds: float) -> None:
        """Rank 0: validate, update the moving average, write checkpoints, log and figure."""
        val_started = time.perf_counter()
        metrics = self.run_validation()
        val_seconds = time.perf_counter() - val_started
        median = metrics["median_dice"]
        if not math.isnan(median):
            self.ema.update(median)
        # without scored validation slices there is nothing to select by: the best checkpoint is the latest
        improved = self.ema_dice is None or self.ema_dice > self.best_ema_dice
        if improved and self.ema_dice is not None:
            self.best_ema_dice = self.ema_dice
        t = self.training
        images = t.iterations_per_epoch * t.batch_size
        self.history.append({
            "epoch": self.epoch, "train_loss": train_loss, "val_median_dice": _finite(median),
            "val_mean_dice": _finite(metrics["mean_dice"]), "val_median_sensitivity": _finite(metrics["median_sensitivity"]),
            "val_median_precision": _finite(metrics["median_precision"]), "val_slices": metrics["n_slices"],
            "val_ema_dice": self.ema_dice, "best": improved, "lr": lr, "epoch_seconds": round(seconds, 3),
            "val_seconds": round(val_seconds, 3), "images_per_second": round(images / seconds, 3),
        })
        ckpt = self.checkpoint()
        save_checkpoint(self.out / LATEST, ckpt)
        if improved:
            save_checkpoint(self.out / BEST, ckpt)
        write_log(self.out / "log.jsonl", self.history)
        plot_progress(self.out / "progress.png", self.history)
        h = self.history[-1]
        self.log(f"epoch {self.epoch}/{self.target_epochs}: loss {train_loss:.4f}, val median Dice {_fmt(median)} "
                 f"(EMA {_fmt(self.ema_dice)}{', best' if improved else ''}), {h['images_per_second']:.1f} images/s")

    def checkpoint(self) -> Dict[str, Any]:
        """Everything needed to predict with, or to continue, this run."""
        return {
            "model": model_state(self.net),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "rng": rng_state(),
            "loader": {"seed": self.opts.seed, "world_size": self.ctx.world_size, "rule": "batch seed = (seed, rank, epoch, batch)"},
            "plan": self.plan.to_dict(),
            "plan_hash": self.plan_hash,
            "training_overrides": {"epochs": self.training.epochs, "iterations_per_epoch": self.training.iterations_per_epoch,
                                   "learning_rate": self.training.learning_rate},
            "pretrained": self.pretrained_origin,
            "distilled_from": None if self.teacher is None else self.teacher.origin,
            "best_ema_dice": self.best_ema_dice,
            "ema_dice": self.ema_dice,
            "ema_state": (self.ema.raw, self.ema.count),
            "history": self.history,
            "dataset": self.data.name,
            "fold": self.opts.fold,
            # deepwml_calibrate fits on exactly the cases this network never trained on, even if splits.json changes later
            "validation_cases": None if self.cases.val_is_train else list(self.cases.val),
        }

    def final_validation(self) -> Dict[str, Any]:
        """validation/summary.json: the best checkpoint's per-slice metrics on the validation cases."""
        best = self.out / BEST
        if not best.is_file() or not self.val_slices.n_slices:
            return {}
        ckpt = load_checkpoint(best)
        current = model_state(self.net)
        try:
            self.net.load_state_dict(ckpt["model"])
        except (KeyError, TypeError, RuntimeError) as e:
            raise DeepWMLError(f"weights do not fit this run's network ({type(e).__name__}: {str(e).splitlines()[0][:200]})", best) from None
        metrics = self.run_validation()
        self.net.load_state_dict(current)
        summary = {"dataset": self.data.name, "plan": self.data.plan_name, "fold": self.opts.fold, "checkpoint": BEST,
                   "epoch": ckpt["epoch"], "ema_dice": ckpt["ema_dice"], "validated_on_training_cases": self.cases.val_is_train,
                   **metrics}
        write_json(self.out / "validation" / "summary.json", summary)
        if "class_dice" in metrics:
            per_class = ", ".join(f"class {k} {_fmt(v)}" for k, v in metrics["class_dice"].items())
            self.log(f"best checkpoint (epoch {ckpt['epoch']}): validation Dice per class {per_class}; median over cases of "
                     f"their mean {metrics['median_dice']:.3f} on {metrics['n_slices']} slices → {self.out / 'validation' / 'summary.json'}")
            return {"val_median_dice": metrics["median_dice"]}
        self.log(f"best checkpoint (epoch {ckpt['epoch']}): validation median per-slice Dice {metrics['median_dice']:.3f}, "
                 f"sensitivity {metrics['median_sensitivity']:.3f}, precision {metrics['median_precision']:.3f} "
                 f"on {metrics['n_slices']} slices → {self.out / 'validation' / 'summary.json'}")
        return {"val_median_dice": metrics["median_dice"]}


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (model initialisation is then the same on every rank and every run)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _to_device(array: np.ndarray, device: torch.device, channels_last: bool) -> torch.Tensor:
    """A batch array as a tensor on ``device`` (pinned and asynchronous for CUDA)."""
    t = torch.from_numpy(np.ascontiguousarray(array))
    if device.type == "cuda":
        t = t.pin_memory().to(device, non_blocking=True)
    return t.contiguous(memory_format=torch.channels_last) if channels_last else t


def _finite(x: float) -> Optional[float]:
    """None for NaN (JSON has no NaN)."""
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


def _fmt(x: Optional[float]) -> str:
    """Three decimals or '-'."""
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def train(opts: TrainOptions, log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Train one fold (library form of deepwml_train)."""
    trainer = Trainer(opts, log)
    try:
        return trainer.run()
    finally:
        D.shutdown(trainer.ctx)
