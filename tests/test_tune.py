"""train.py tune: a study of ordinary runs on one SQLite storage, resumable, shared by workers, pruned."""
from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO
from zoo.cli import main

SPACE = ("model.lr: {type: float, low: 1.0e-3, high: 0.1, log: true}\n"
         "model.dropout: {type: float, low: 0.0, high: 0.3}\n")
RUN = ["--model", "cnn", "--max-epochs", "2", "--model.channels", "[8]", "--model.hidden", "16",
       "--trainer.limit_train_batches", "3", "--trainer.limit_val_batches", "2", "--trainer.limit_test_batches", "1",
       "--threads", "1"]


def _space(tmp_path: Path, text: str = SPACE) -> str:
    (tmp_path / "space.yaml").write_text(text)
    return str(tmp_path / "space.yaml")


def _finished(db: Path) -> int:
    """Finished trials in the study file (0 while Optuna has created the file but not yet its tables)."""
    with sqlite3.connect(db) as con:
        try:
            return con.execute("select count(*) from trials where state in ('COMPLETE', 'PRUNED')").fetchone()[0]
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return 0
            raise


def test_a_small_study_writes_best_yaml_that_reruns(tmp_path: Path, capsys) -> None:
    study = tmp_path / "study"
    assert main(["tune", *RUN, "--space", _space(tmp_path), "--trials", "4", "--output-dir", str(study)]) == 0
    out = capsys.readouterr().out
    assert "best val/acc" in out and "its test: test/acc = " in out and _finished(study / "study.db") == 4
    assert len(list(study.glob("trial-*/config.yaml"))) >= 4
    assert (study / "optimization_history.png").is_file()
    assert main(["-c", str(study / "best.yaml"), "--runs-dir", str(tmp_path / "again")]) == 0


def test_only_the_best_trial_is_tested_once_the_study_ends(tmp_path: Path) -> None:
    study = tmp_path / "study"
    args = ["tune", *RUN, "--space", _space(tmp_path), "--trials", "3", "--pruner", "none"]
    assert main([*args, "--output-dir", str(study)]) == 0
    runs = {p.parent: json.loads(p.read_text()) for p in study.glob("trial-*/metrics.json")}
    tested = [run for run, m in runs.items() if "test/acc" in m]
    assert len(runs) == 3 and len(tested) == 1 and list(study.glob("trial-*/metrics-resume-*.json")) == []
    assert (tested[0] / "config.yaml").read_text() == (study / "best.yaml").read_text()
    import optuna

    number = optuna.load_study(study_name="study", storage=f"sqlite:///{study / 'study.db'}").best_trial.number
    best = runs[tested[0]]
    assert tested[0].name == f"trial-{number:04d}" and "untested" not in best
    assert all("untested" in m for run, m in runs.items() if run != tested[0])
    assert main([*args, "--storage", f"sqlite:///{study / 'study.db'}"]) == 0  # finished: report, no new test
    assert json.loads((tested[0] / "metrics.json").read_text()) == best


def test_a_killed_study_resumes_to_n_finished_trials(tmp_path: Path) -> None:
    study = tmp_path / "study"
    args = ["tune", *RUN, "--space", _space(tmp_path), "--trials", "3", "--stale-after", "2"]
    proc = subprocess.Popen([sys.executable, "train.py", *args, "--output-dir", str(study)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (study / "study.db").exists() or _finished(study / "study.db") < 1:
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(3)  # past --stale-after: the trial it was running has no heartbeat any more
    assert main([*args, "--storage", f"sqlite:///{study / 'study.db'}"]) == 0
    assert _finished(study / "study.db") == 3
    with sqlite3.connect(study / "study.db") as con:
        assert con.execute("select count(*) from trials where state = 'RUNNING'").fetchone()[0] == 0


def test_two_workers_share_one_sqlite_study(tmp_path: Path, capsys) -> None:
    study = tmp_path / "study"
    assert main(["tune", *RUN, "--space", _space(tmp_path), "--trials", "4", "--jobs", "2", "--output-dir",
                 str(study)]) == 0
    assert _finished(study / "study.db") >= 4 and "locked" not in capsys.readouterr().err


def test_a_short_hyperband_study_says_its_search_is_near_random(tmp_path: Path, capsys) -> None:
    assert main(["tune", *RUN, "--space", _space(tmp_path), "--trials", "2", "--pruner", "hyperband",
                 "--output-dir", str(tmp_path / "study")]) == 0
    assert "2 trials are close to a random search" in capsys.readouterr().err


def test_pruning_stops_a_trial() -> None:
    from zoo.tune import PruningCallback

    class Trial:
        reported: list = []

        def report(self, value: float, step: int) -> None:
            self.reported.append((step, value))

        def should_prune(self) -> bool:
            return True

    class Trainer:
        sanity_checking, current_epoch, should_stop = False, 1, False
        callback_metrics = {"val/acc": 0.25}

    trainer, trial = Trainer(), Trial()
    callback = PruningCallback(trial, "val/acc", "maximize")
    callback.on_validation_end(trainer, None)
    assert trainer.should_stop and callback.pruned and trial.reported == [(1, 0.25)]


def test_a_pruned_trial_is_not_tested_and_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import optuna

    monkeypatch.setattr(optuna.trial.Trial, "should_prune", lambda self: True)  # the pruner gives up at once
    study = tmp_path / "study"
    assert main(["tune", *RUN, "--space", _space(tmp_path), "--trials", "1", "--pruner", "median",
                 "--output-dir", str(study)]) == 2
    err = capsys.readouterr().err
    assert "no trial of study" in err and "(1 pruned)" in err
    metrics = json.loads(next(study.glob("trial-0000/metrics.json")).read_text())
    assert metrics["pruned"] is True and metrics["epochs"] < 2 and not any(k.startswith("test/") for k in metrics)


def test_trials_log_to_one_wandb_group_named_after_the_study(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import zoo.training

    groups: list[str] = []

    def fake_fit(model: str, data: str, args, cli_args: list[str]) -> int:
        from zoo.runs import build_logger

        logger = build_logger(args, Path(args.output_dir), model)
        groups.append(logger._wandb_init["group"])
        Path(args.output_dir).mkdir(parents=True)
        (Path(args.output_dir) / "config.yaml").write_text("seed_everything: 0\n")
        (Path(args.output_dir) / "metrics.json").write_text("{}")  # tested already: the report tests nothing
        args.extra_callbacks[0].best = 0.5
        return 0

    monkeypatch.setattr(zoo.training, "fit_and_test", fake_fit)
    monkeypatch.setenv("WANDB_MODE", "offline")
    args = ["tune", *RUN, "--space", _space(tmp_path), "--trials", "2", "--logger", "wandb"]
    assert main([*args, "--output-dir", str(tmp_path / "a"), "--study", "lr-sweep"]) == 0
    assert main([*args, "--output-dir", str(tmp_path / "b"), "--wandb-group", "mine"]) == 0
    assert groups == ["lr-sweep", "lr-sweep", "mine", "mine"]


@pytest.mark.parametrize("space,expected", [
    ("model.lrr: {type: float, low: 0.1, high: 1}\n", "'model.lrr' is not an argument"),
    ("model.lr: {type: float, low: 1, high: 0.1}\n", "must be <= high"),
    ("model.channels: {type: categorical, choices: []}\n", "non-empty list of choices"),
    ("data.batch_size: {type: int, low: 8.5, high: 64}\n", "int needs numeric low and high"),
    ("model.lr: {low: 0.1, high: 1}\n", "needs a type"),
])
def test_bad_spaces_fail_before_any_trial(space: str, expected: str, tmp_path: Path, capsys) -> None:
    assert main(["tune", *RUN, "--space", _space(tmp_path, space), "--trials", "2", "--runs-dir", str(tmp_path)]) == 2
    assert expected in capsys.readouterr().err.strip().splitlines()[-1]
    assert not (tmp_path / "tune").exists()  # no study folder, no trial


def test_lr_and_batch_size_finders_record_what_they_chose(tmp_path: Path) -> None:
    import json

    import yaml

    out = tmp_path / "run"
    assert main([*RUN, "--lr-find", "--batch-size-find", "--model.scheduler", "none", "--max-epochs", "3",
                 "--trainer.limit_train_batches", "20", "--output-dir", str(out)]) == 0  # 50 finder steps fit
    metrics = json.loads((out / "metrics.json").read_text())
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["model"]["lr"] == metrics["lr_find/lr"] and 1e-6 <= metrics["lr_find/lr"] <= 1.0
    assert config["data"]["batch_size"] == metrics["batch_size_find/batch_size"] >= 1
    assert list(out.glob("artifacts/lr_find_*.png"))
