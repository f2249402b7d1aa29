"""``train.py`` / ``zoo-train``: the zoo's command line, built on LightningCLI.

Zoo-level shortcuts (``--model NAME``, ``--gpus``, ``--data-dir`` ...) are translated into
LightningCLI arguments; every constructor argument stays reachable as ``--model.<arg>``,
``--data.<arg>`` and ``--trainer.<arg>``, and YAML configs work with ``-c``.

Example:
    python train.py --model cnn                      # fit on the offline default, then test
    python train.py --model cnn --data mnist --data-dir ../shared/data --max-epochs 3
    python train.py predict --ckpt-path runs/cnn/<run>/checkpoints/best.ckpt --input digit.png
"""
from __future__ import annotations

import argparse
import re
import sys
from typing import NoReturn

from zoo.catalog import check_data_fits, check_model_name, format_listing, format_model_help, scan_models
from zoo.configs import load_yaml_mapping
from zoo.devices import choose_wait_policy
from zoo.errors import ZooUserError
from zoo.registry import UnknownNameError, get_model_entry

COMMANDS = ("fit", "predict", "export", "serve", "tune")
USAGE = """usage: train.py [fit|predict|export] --model NAME [--data NAME] [--gpus N] [--num-nodes N]
                [--precision P] [--max-epochs N] [--seed S] [--logger csv|tensorboard|wandb]
                [--data-dir DIR] [--output-dir DIR] [--runs-dir DIR] [--ckpt-path PATH|last]
                [--fast-dev-run] [--patience N] [--no-early-stopping] [--threads N] [-c cfg.yaml]
                [--wandb-project P] [--wandb-name N] [--wandb-tags T ...] [--wandb-group G] [--wandb-log-model]
                [--wandb-watch] [--debug-stats [--debug-every N] [--debug-layers PATTERN]]
                [--model.<hparam> V] [--data.<hparam> V] [--trainer.<arg> V]
       train.py --list
       train.py --model NAME --help        (every hyperparameter with its default)
       train.py --model NAME --help-full   (LightningCLI's complete help, Trainer included)
       train.py predict --ckpt-path PATH --input PATH
       train.py export --ckpt-path PATH --format onnx|torchscript
       train.py tune --model NAME --space space.yaml --trials N [--timeout S] [--jobs K] [--storage URL]
                [--study NAME] [--metric val/acc --direction max] [--pruner median|hyperband|none] [fit options]
       train.py serve --ckpt-path PATH [--host 127.0.0.1] [--port 8000] [--workers N]
                [--max-batch-size B] [--batch-timeout MS] [--max-body-mb M]

Fit trains with early stopping and checkpoints (best and last) on the model's monitored metric,
then tests the best checkpoint. Each run writes a new folder runs/<model>/<timestamp> with
config.yaml, checkpoints/, logs, artifacts/ and metrics.json.
"""


OPTIMIZER_HINT = ("the optimiser is a model hyperparameter: --model.optimizer sgd|adam|adamw, --model.lr, "
                  "--model.scheduler (in YAML under model:); top-level optimizer / lr_scheduler blocks are not used")
_NUMBER = re.compile(r"^-\d")  # a negative value (`--data.batch_size -4`), not an option


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise ZooUserError(f"{message} (see `python train.py --help`)")


def zoo_parser() -> argparse.ArgumentParser:
    p = _Parser(add_help=False, allow_abbrev=False, usage=USAGE)
    p.add_argument("--model")
    p.add_argument("--data")
    p.add_argument("--gpus", type=int)
    p.add_argument("--num-nodes", type=int)
    p.add_argument("--precision")
    p.add_argument("--max-epochs", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--logger", choices=("csv", "tensorboard", "wandb"), default="csv")
    p.add_argument("--data-dir")
    p.add_argument("--output-dir")
    p.add_argument("--runs-dir", default="runs")
    p.add_argument("--ckpt-path")
    p.add_argument("--fast-dev-run", action="store_true")
    p.add_argument("--patience", type=int, help="early-stopping patience in epochs (default: the model's)")
    p.add_argument("--no-early-stopping", action="store_true")
    p.add_argument("-c", "--config", action="append", default=[])
    p.add_argument("--wandb-project")
    p.add_argument("--wandb-name")
    p.add_argument("--wandb-tags", nargs="*")
    p.add_argument("--wandb-group", help="W&B run group (train.py tune: the study's name unless given)")
    p.add_argument("--wandb-log-model", action="store_true", help="upload checkpoints as W&B artifacts")
    p.add_argument("--wandb-watch", action="store_true", help="log gradient histograms with wandb.watch")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--input")
    p.add_argument("--format", choices=("onnx", "torchscript"))
    p.add_argument("--debug-stats", action="store_true", help="activation / gradient health, feature maps, saliency")
    p.add_argument("--debug-every", type=int, default=50, help="--debug-stats: measure every N training steps")
    p.add_argument("--debug-layers", default="*", help="--debug-stats: layer-name pattern, e.g. 'net.*'")
    p.add_argument("--lr-find", action="store_true", help="Lightning's learning-rate finder before fitting")
    p.add_argument("--batch-size-find", action="store_true", help="Lightning's batch-size finder before fitting")
    p.add_argument("--space", help="tune: the search space YAML")
    p.add_argument("--trials", type=int, help="tune: finished trials wanted in the study")
    p.add_argument("--timeout", type=float, help="tune: stop starting trials after S seconds")
    p.add_argument("--jobs", type=int, default=1, help="tune: worker processes sharing the study")
    p.add_argument("--storage", help="tune: Optuna RDB URL (default: SQLite in the study folder)")
    p.add_argument("--study", help="tune: study name (default: the study folder's name)")
    p.add_argument("--metric", help="tune: the validation metric to optimise (default: the model's monitor)")
    p.add_argument("--direction", choices=("max", "min"), help="tune: maximise or minimise --metric")
    p.add_argument("--pruner", choices=("median", "hyperband", "none"), default="median", help="tune: pruning")
    p.add_argument("--stale-after", type=int, default=60, help="tune: seconds without heartbeat before a trial fails")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--host", default="127.0.0.1", help="serve: address to listen on")
    p.add_argument("--port", type=int, default=8000, help="serve: port")
    p.add_argument("--workers", type=int, default=1, help="serve: server processes")
    p.add_argument("--max-batch-size", type=int, default=16, help="serve: requests batched into one forward pass")
    p.add_argument("--batch-timeout", type=float, default=10.0, help="serve: ms to wait for a batch to fill")
    p.add_argument("--max-body-mb", type=float, default=10.0, help="serve: largest request body accepted")
    p.add_argument("--list", action="store_true")
    p.add_argument("-h", "--help", action="store_true")
    p.add_argument("--help-full", action="store_true")
    return p


def _model_from_configs(configs: list[str]) -> tuple[str | None, str | None]:
    """``zoo.model`` / ``zoo.data`` from the YAML configs (written into every run's config.yaml)."""
    model = data = None
    for cfg in configs:
        zoo_section = load_yaml_mapping(cfg, "config file").get("zoo") or {}
        model, data = zoo_section.get("model", model), zoo_section.get("data", data)
    return model, data


def _precision(value: str | None) -> str | None:
    if value is None:
        return None
    from typing import get_args

    from lightning.fabric.connector import _PRECISION_INPUT_STR, _PRECISION_INPUT_STR_ALIAS

    known = [*get_args(_PRECISION_INPUT_STR), *get_args(_PRECISION_INPUT_STR_ALIAS)]
    if value not in known:
        raise ZooUserError(f"unknown precision '{value}'; choose one of {', '.join(known)}")
    return value


def translate(args: argparse.Namespace, extras: list[str]) -> list[str]:
    """LightningCLI arguments for the zoo shortcuts; explicit ``--trainer.*`` etc. come last and win."""
    out = [f"--config={c}" for c in args.config]
    pairs = (("--trainer.max_epochs", args.max_epochs), ("--seed_everything", args.seed),
             ("--data.data_dir", args.data_dir), ("--trainer.precision", _precision(args.precision)),
             ("--trainer.num_nodes", args.num_nodes))
    out += [f"{key}={value}" for key, value in pairs if value is not None]
    if args.fast_dev_run:
        out.append("--trainer.fast_dev_run=true")
    return out + extras


def main(argv: list[str] | None = None) -> int:
    """Entry point: returns the exit code (2 for a user mistake, printed as one line)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "torch" not in sys.modules:  # read by OpenMP when torch loads (benchmarks/bench_threads.py)
        choose_wait_policy()
    try:
        return _main(argv)
    except ZooUserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except UnknownNameError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except argparse.ArgumentError as exc:  # jsonargparse: a value of the wrong type, an unknown key
        message = re.sub(r'Parser key "([^"]+)":', r"--\1:", " ".join(str(exc).split()))
        if re.search(r"'(optimizer|lr_scheduler)\b", message):
            message = OPTIMIZER_HINT
        print(f"error: {message} (see `python train.py --model NAME --help`)", file=sys.stderr)
        return 2


def _main(argv: list[str]) -> int:
    command = argv.pop(0) if argv and argv[0] in COMMANDS else "fit"
    argv = list(argv)
    args, extras = zoo_parser().parse_known_args(argv)
    if args.list:
        print(format_listing(scan_models()))
        return 0
    if args.debug_every < 1:
        raise ZooUserError(f"--debug-every must be >= 1, got {args.debug_every}")
    if args.threads is not None:
        if args.threads < 1:
            raise ZooUserError(f"--threads must be >= 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    if command == "serve":
        from zoo.serve import run_serve

        return run_serve(args)
    if command in ("predict", "export"):
        from zoo.inference import run_export, run_predict

        return run_predict(args) if command == "predict" else run_export(args)
    model_name, data_name = _model_from_configs(args.config)
    model_name, data_name = args.model or model_name, args.data or data_name
    if model_name is None:
        if args.help:
            print(USAGE + "\nmodels:\n" + format_listing(scan_models()))
            return 0
        raise ZooUserError("no model given; pass --model NAME (see `python train.py --list`)")
    check_model_name(model_name)
    if data_name is not None:
        check_data_fits(model_name, data_name)
    if args.gpus is not None and any(e.startswith("--trainer.accelerator") for e in extras):
        raise ZooUserError("give either --gpus N or --trainer.accelerator, not both (--gpus 0 is the CPU)")
    if args.help and not args.help_full:
        print(format_model_help(model_name, data_name))
        return 0
    unknown = [e for e in extras if e.startswith("-") and not e.startswith(("--model.", "--data.", "--trainer."))
               and e.split("=")[0] not in ("--seed_everything", "--print_config") and not _NUMBER.match(e)]
    if any(e.split("=")[0] in ("--optimizer", "--lr_scheduler") for e in unknown):
        raise ZooUserError(f"unknown option --optimizer: {OPTIMIZER_HINT}")
    if unknown:
        raise ZooUserError(f"unknown option {unknown[0]} (see `python train.py --help`)")
    if command == "tune":
        from zoo.tune import run_tune

        data = data_name or get_model_entry(model_name).datamodule
        return run_tune(args, model_name, data, translate(args, extras), argv)
    from zoo.training import fit_and_test

    cli_args = translate(args, extras) + (["--help"] if args.help_full else [])
    return fit_and_test(model_name, data_name, args, cli_args)


if __name__ == "__main__":
    sys.exit(main())
