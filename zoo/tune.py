"""``train.py tune``: hyperparameter search with Optuna over ordinary zoo runs.

The search space is a YAML mapping of ``model.*``, ``data.*`` or ``trainer.*`` keys to distributions, checked
against the model's and DataModule's constructor arguments (and the Trainer's) before the first trial:

    model.lr: {type: float, low: 1.0e-4, high: 0.1, log: true}
    model.dropout: {type: float, low: 0.0, high: 0.5}
    model.channels: {type: categorical, choices: [[16, 32], [32, 64]]}
    data.batch_size: {type: int, low: 32, high: 128, step: 32}

Each trial is a normal run folder (``trial-0007/`` with its ``config.yaml``, re-runnable with ``-c``) inside the
study folder, which also holds the SQLite study (``study.db``), ``best.yaml`` (the best trial's config) and the
plots. Trials are fitted and validated, not tested; when the study ends the best trial (chosen on validation) is
tested once and its test metrics are added to its ``metrics.json``. A study is shared through its storage:
``--jobs K`` starts K worker processes on it, and any number of ``tune`` commands on any machines may point at
the same ``--storage`` URL (a shared database) and ``--study`` name. Running the same command again with
``--storage sqlite:///<study>/study.db`` resumes a killed study: trials whose heartbeat stopped are marked failed
and the study continues until ``--trials`` trials have finished.

Example:
    python train.py tune --model cnn --space space.yaml --trials 20 --pruner median --jobs 2
"""
from __future__ import annotations

import argparse
import copy
import inspect
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from lightning.pytorch.callbacks import Callback

from zoo.errors import ZooUserError

__all__ = ["run_tune", "load_space", "PruningCallback"]

TYPES = ("float", "int", "categorical")


def load_space(path: str, model: str, data: str) -> dict[str, dict[str, Any]]:
    """The search space of a YAML file, validated (one-line errors naming the key) before any trial runs."""
    from zoo.catalog import entry_params
    from zoo.configs import load_yaml_mapping

    space = load_yaml_mapping(path, "search space")
    if not space:
        raise ZooUserError(f"search space '{path}' is empty; map keys such as model.lr to distributions")
    import lightning

    known = {"model": {p.name for p in entry_params(model, "model")},
             "data": {p.name for p in entry_params(data, "data")},
             "trainer": set(inspect.signature(lightning.Trainer.__init__).parameters) - {"self"}}
    for key, spec in space.items():
        section, _, name = str(key).partition(".")
        if section not in known or name not in known[section]:
            raise ZooUserError(f"search space key '{key}' is not an argument of "
                               f"{section if section in known else 'the run'}"
                               f"; use model.<arg>, data.<arg> or trainer.<arg> from `train.py --model {model} --help`")
        if not isinstance(spec, dict) or spec.get("type") not in TYPES:
            raise ZooUserError(f"search space key '{key}' needs a type: {', '.join(TYPES)}")
        if spec["type"] == "categorical":
            if not isinstance(spec.get("choices"), list) or not spec["choices"]:
                raise ZooUserError(f"search space key '{key}': a categorical needs a non-empty list of choices")
            continue
        low, high = spec.get("low"), spec.get("high")
        number = int if spec["type"] == "int" else (int, float)
        if not isinstance(low, number) or not isinstance(high, number) or isinstance(low, bool):
            raise ZooUserError(f"search space key '{key}': {spec['type']} needs numeric low and high of that type, "
                               f"got {low!r} and {high!r}")
        if low > high or (spec.get("log") and low <= 0):
            raise ZooUserError(f"search space key '{key}': low {low} must be <= high {high} (and > 0 with log)")
    return space


def suggest(trial: Any, space: dict[str, dict[str, Any]]) -> list[str]:
    """The trial's values as CLI overrides (``--model.lr=0.003``)."""
    out = []
    for key, spec in space.items():
        if spec["type"] == "float":
            value = trial.suggest_float(key, spec["low"], spec["high"], log=bool(spec.get("log")),
                                        step=spec.get("step"))
        elif spec["type"] == "int":
            value = trial.suggest_int(key, spec["low"], spec["high"], log=bool(spec.get("log")),
                                      step=spec.get("step", 1))
        else:
            index = trial.suggest_categorical(key, list(range(len(spec["choices"]))))
            value = spec["choices"][index]
            trial.set_user_attr(key, value)
        out.append(f"--{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}")
    return out


class PruningCallback(Callback):
    """Reports the monitored metric to the Optuna trial after every validation and stops a trial the pruner
    gives up on (a small own callback: optuna-integration's targets other Lightning versions)."""

    def __init__(self, trial: Any, metric: str, direction: str) -> None:
        self.trial, self.metric, self.best = trial, metric, None
        self.maximize, self.pruned = direction == "maximize", False

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.sanity_checking or self.metric not in trainer.callback_metrics:
            return
        value = float(trainer.callback_metrics[self.metric])
        better = self.best is None or (value > self.best if self.maximize else value < self.best)
        self.best = value if better else self.best
        self.trial.report(value, trainer.current_epoch)
        if self.trial.should_prune():
            self.pruned = True
            trainer.should_stop = True


def _study(args: argparse.Namespace, folder: Path, url: str, direction: str) -> Any:
    import optuna

    storage = optuna.storages.RDBStorage(url, heartbeat_interval=max(1, args.stale_after // 4),
                                         grace_period=args.stale_after,
                                         engine_kwargs=({"connect_args": {"timeout": 60}} if url.startswith("sqlite")
                                                        else {}))
    pruner = {"median": optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
              "hyperband": optuna.pruners.HyperbandPruner(), "none": optuna.pruners.NopPruner()}[args.pruner]
    study = optuna.create_study(storage=storage, study_name=args.study or folder.name, direction=direction,
                                load_if_exists=True, pruner=pruner,
                                sampler=optuna.samplers.TPESampler(seed=args.seed if args.seed is not None else 0))
    optuna.storages.fail_stale_trials(study)
    _fail_orphans(study, storage, args.stale_after)
    return study


def _fail_orphans(study: Any, storage: Any, grace: float) -> None:
    """Optuna finds stale trials by their heartbeat, and a trial killed before its first heartbeat has none: mark
    those failed too once they are older than the grace period (a live worker records its first beat at once)."""
    import datetime

    import optuna
    import sqlalchemy

    with storage.engine.connect() as con:
        beating = {row[0] for row in con.execute(sqlalchemy.text("select trial_id from trial_heartbeats"))}
    now = datetime.datetime.now()
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if trial._trial_id not in beating and (now - trial.datetime_start).total_seconds() > grace:
            storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)


def _folder(args: argparse.Namespace, model: str) -> Path:
    """The study folder: the one holding ``--storage``'s SQLite file (a resume or a worker), else a new one."""
    from zoo.runs import new_run_dir

    if args.storage and args.storage.startswith("sqlite:///"):
        existing = Path(args.storage.removeprefix("sqlite:///")).parent
        if (existing / "space.yaml").is_file():
            return existing
    return new_run_dir(Path(args.runs_dir) / "tune", model, args.output_dir)


WORKER_DROPS = {"--jobs": 1, "--output-dir": 1, "--storage": 1, "--study": 1}


def worker_argv(argv: list[str]) -> list[str]:
    """The tune command's arguments for a worker process: the same, without the options it is given anew."""
    out, skip = [], 0
    for arg in argv:
        if skip:
            skip -= 1
            continue
        name = arg.split("=")[0]
        if name in WORKER_DROPS:
            skip = 0 if "=" in arg else WORKER_DROPS[name]
            continue
        out.append(arg)
    return out


def run_tune(args: argparse.Namespace, model: str, data: str, extras: list[str], argv: list[str]) -> int:
    """Run (or join, or resume) a study; the main process writes ``best.yaml`` and the plots at the end."""
    import warnings

    import optuna

    from zoo.registry import get_model_entry

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    if not args.space or not args.trials:
        raise ZooUserError("tune needs --space FILE.yaml and --trials N")
    entry = get_model_entry(model)
    space = load_space(args.space, entry.name, data)
    metric = args.metric or entry.cls.monitor
    if metric is None:
        raise ZooUserError(f"model '{entry.name}' has no validation metric to tune; pass --metric NAME")
    direction = {"max": "maximize", "min": "minimize"}[args.direction or ("max" if entry.cls.monitor_mode == "max"
                                                                         and metric == entry.cls.monitor else "min")]
    folder = _folder(args, entry.name)
    if not (folder / "space.yaml").exists():
        shutil.copy(args.space, folder / "space.yaml")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = args.storage or f"sqlite:///{folder / 'study.db'}"
    study = _study(args, folder, url, direction)
    if args.pruner == "hyperband" and args.trials < 30 and not args.worker:
        print(f"note: hyperband gives each of its brackets its own TPE history and TPE samples its first 10 trials "
              f"at random, so {args.trials} trials are close to a random search (Optuna suggests >= 10 per bracket); "
              "--pruner median suits short studies", file=sys.stderr)
    workers = [subprocess.Popen([sys.executable, "-m", "zoo.cli", "tune", *worker_argv(argv), "--storage", url,
                                 "--study", study.study_name, "--jobs", "1", "--worker"])
               for _ in range(max(0, args.jobs - 1))] if args.jobs > 1 else []
    start = time.perf_counter()
    objective = _objective(args, entry.name, data, extras, space, metric, direction, folder)
    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    # a worker stops when the finished trials plus those other workers are running make --trials, so K workers
    # do not each start one more (a killed worker's trial is failed, and re-run, when the study resumes)
    enough = optuna.study.MaxTrialsCallback(args.trials, states=(*done, optuna.trial.TrialState.RUNNING))
    if len(study.get_trials(deepcopy=False, states=done)) < args.trials:
        study.optimize(objective, timeout=args.timeout, callbacks=[enough], catch=(ZooUserError,))
    for worker in workers:
        worker.wait()
    if args.worker:
        return 0
    return _report(study, folder, metric, start, args)


def _trial_args(args: argparse.Namespace, folder: Path, number: int, study_name: str) -> argparse.Namespace:
    """The fit options of trial ``number``: its run folder in the study folder, its test left to the end."""
    trial_args = copy.copy(args)
    trial_args.output_dir = str(folder / f"trial-{number:04d}")
    trial_args.ckpt_path, trial_args.defer_test = None, True
    trial_args.wandb_group = args.wandb_group or study_name  # W&B: the study's trials in one group
    return trial_args


def _objective(args: argparse.Namespace, model: str, data: str, extras: list[str], space: dict[str, Any],
               metric: str, direction: str, folder: Path) -> Any:
    import optuna

    from zoo.training import fit_and_test

    def objective(trial: Any) -> float:
        trial_args = _trial_args(args, folder, trial.number, trial.study.study_name)
        pruning = PruningCallback(trial, metric, direction)
        trial_args.extra_callbacks = [pruning]
        code = fit_and_test(model, data, trial_args, [*extras, *suggest(trial, space)])
        if code != 0:
            raise optuna.TrialPruned() if pruning.pruned else RuntimeError(f"trial {trial.number} exited {code}")
        if pruning.pruned:
            raise optuna.TrialPruned()
        if pruning.best is None:
            raise ZooUserError(f"the runs log no '{metric}'; pass --metric with a logged validation metric")
        trial.set_user_attr("run_dir", trial_args.output_dir)
        return pruning.best

    return objective


def _report(study: Any, folder: Path, metric: str, start: float, args: argparse.Namespace) -> int:
    """best.yaml, the plots, and the test of the best trial (the only trial tested, chosen on validation)."""
    import optuna

    states = [t.state.name.lower() for t in study.trials]
    counts = ", ".join(f"{states.count(s)} {s}" for s in sorted(set(states)))
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise ZooUserError(f"no trial of study '{study.study_name}' completed ({counts}); see {folder}")
    best = study.best_trial
    run = Path(best.user_attrs["run_dir"])
    if not (run / "metrics.json").is_file():
        raise ZooUserError(f"the best trial's run folder '{run}' is not on this machine; run this tune command "
                           f"with --storage {args.storage or 'URL'} where that trial ran to test it")
    shutil.copy(run / "config.yaml", folder / "best.yaml")
    _plots(study, folder)
    done = json.loads((run / "metrics.json").read_text())
    if "untested" in done:  # tested once, after the study; a resumed study that had tested it does not repeat it
        from zoo.training import test_run

        done = test_run(run, _trial_args(args, folder, best.number, study.study_name))
    tested = ", ".join(f"{k} = {v:.4f}" for k, v in sorted(done.items()) if k.startswith("test/")
                       and isinstance(v, (int, float)))
    params = {k: best.user_attrs.get(k, v) for k, v in best.params.items()}  # categoricals by value, not index
    print(f"study '{study.study_name}': {counts} in {time.perf_counter() - start:.0f} s; best {metric} = "
          f"{best.value:.4f} (trial {best.number}: {params}){'; its test: ' + tested if tested else ''}\n"
          f"best config: {folder / 'best.yaml'} (re-run it with -c)")
    return 0


def _plots(study: Any, folder: Path) -> None:
    """Optimisation history, parameter importances and parallel coordinates as PNGs in the study folder."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as vis

    for name, plot in (("optimization_history", vis.plot_optimization_history),
                       ("param_importances", vis.plot_param_importances),
                       ("parallel_coordinate", vis.plot_parallel_coordinate)):
        try:
            ax = plot(study)
        except (ValueError, RuntimeError) as exc:  # e.g. importances need >= 2 completed trials
            print(f"no {name} plot: {exc}")
            continue
        fig = (ax if not hasattr(ax, "__len__") else ax.flat[0]).figure
        fig.set_size_inches(9, 5)
        fig.tight_layout()
        fig.savefig(folder / f"{name}.png", dpi=110)
        plt.close(fig)
