"""deepwml_train: train the 2D U-Net on one fold of a preprocessed dataset (resumable; torchrun for several processes)."""
from __future__ import annotations

import argparse
import signal
from types import FrameType
from typing import List, Optional

from deepwml.cli.common import add_dataset_argument, add_device_argument, add_version_argument, run, run_installed
from deepwml.paths import add_root_arguments, preprocessed_root, results_root


def build_parser() -> argparse.ArgumentParser:
    """Arguments of deepwml_train."""
    parser = argparse.ArgumentParser(
        prog="deepwml_train",
        description=(
            "Train one fold (0-4, or 'all' = every non-test case, validated on its own training cases) with a plan "
            "made by deepwml_plan_and_preprocess. Writes $DEEPWML_RESULTS/DatasetNNN_Name/PLAN/fold_K/. "
            "Several processes: torchrun --nproc_per_node N $(which deepwml_train) ..."
        ),
    )
    add_dataset_argument(parser)
    parser.add_argument("fold", help="fold number (0-4) or 'all'")
    parser.add_argument("-p", "--plan", default="paper", help="plan name, e.g. paper or cpu_fast (default: paper)")
    add_root_arguments(parser, kinds=("preprocessed", "results"))
    add_device_argument(parser)
    parser.add_argument("--continue", dest="resume", action="store_true", help="resume from checkpoint_latest.pth")
    parser.add_argument("--epochs", type=int, default=None, help="override plan.training.epochs")
    parser.add_argument("--iterations", type=int, default=None, help="override plan.training.iterations_per_epoch")
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="wall-clock budget: train fewer epochs (with the schedule ending on them) if the plan's would not fit")
    parser.add_argument("--num-workers", type=int, default=None,
                        help="augmentation worker processes (0: in this process; default: plan, else from the CPU count)")
    parser.add_argument("--pretrained", default=None, metavar="builtin|PATH",
                        help="start from these weights: 'builtin' (the model shipped with DeepWML), a trained model's PLAN "
                        "folder, a fold folder or a checkpoint file; its network must equal the plan's. The learning rate "
                        "then defaults to 0.1 x the plan's")
    parser.add_argument("--distill-from", default=None, metavar="builtin|PLAN_DIR",
                        help="distil a trained binary model (e.g. an ensemble) into this network: the loss follows its averaged "
                        "probabilities as well as the labels. Its preprocessing must equal the plan's; --continue reloads it")
    parser.add_argument("--distill-folds", nargs="+", default=None, metavar="K",
                        help="the teacher's folds (default: all it has)")
    parser.add_argument("--distill-weight", type=float, default=None,
                        help="the teacher's share of the loss, in (0, 1] (default: 0.5; the rest follows the labels)")
    parser.add_argument("--lr", type=float, default=None, help="learning rate instead of the plan's (or the fine-tuning default)")
    parser.add_argument("--seed", type=int, default=0, help="seed of initialisation and data sampling (default: 0)")
    parser.add_argument("--no-bf16", dest="bf16", action="store_false",
                        help="no bf16 autocast (CPU: fp32; CUDA: fp16 autocast instead)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads per process (default: physical cores / processes on this machine)")
    parser.add_argument("--progress", action="store_true", help="show the progress bar even when stderr is not a terminal")
    add_version_argument(parser)
    return parser


def _main(argv: Optional[List[str]]) -> int:
    args = build_parser().parse_args(argv)
    # imported here so that --help stays fast
    from deepwml.training.preprocessed import parse_fold
    from deepwml.training.trainer import TrainOptions, train

    opts = TrainOptions(
        dataset=args.dataset,
        fold=parse_fold(args.fold),
        plan_name=args.plan,
        preprocessed_root=preprocessed_root(args.preprocessed_root),
        results_root=results_root(args.results_root),
        device=args.device,
        resume=args.resume,
        epochs=args.epochs,
        iterations=args.iterations,
        max_minutes=args.max_minutes,
        num_workers=args.num_workers,
        seed=args.seed,
        bf16=args.bf16,
        threads=args.threads,
        progress=True if args.progress else None,
        pretrained=args.pretrained,
        learning_rate=args.lr,
        distill_from=args.distill_from,
        distill_folds=args.distill_folds,
        distill_weight=args.distill_weight,
    )
    train(opts)
    return 0


def _interrupt(signum: int, frame: Optional[FrameType]) -> None:
    """Turn SIGTERM into KeyboardInterrupt."""
    raise KeyboardInterrupt


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point; from the real command line, first re-executes with a tuned memory allocator (see utils.allocator)."""
    if argv is None:
        from deepwml.utils.allocator import reexec_with_tuned_allocator

        reexec_with_tuned_allocator()
        # a polite kill (SIGTERM: schedulers, torchrun) stops like Ctrl-C: workers shut down, the resume command is printed
        signal.signal(signal.SIGTERM, _interrupt)
    return run(_main, argv)


def entry() -> None:
    """The installed command (and ``python -m``): main(), which first re-executes with the tuned allocator, then exit
    without the interpreter's teardown (deepwml.cli.common.run_installed)."""
    run_installed(main)


if __name__ == "__main__":
    entry()
