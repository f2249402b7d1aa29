"""Recommenders: interaction splits, re-indexing, MF and AutoRec vs biases, NeuMF ranking metrics, predict, bad
inputs."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from zoo.cli import main
from zoo.datamodules.interactions import InteractionsDataModule, MovieLensDataModule, generate_ratings
from zoo.errors import ZooUserError
from zoo.inference import load_zoo_checkpoint
from zoo.models.autorec import AutoRec
from zoo.models.mf import MatrixFactorization
from zoo.models.neumf import NeuMF, ranking_metrics, update_ranking
from zoo.models.recommender import fit_biases


def _ml100k(folder: Path, folds: int = 2) -> pd.DataFrame:
    """A tiny ml-100k layout (u.data, u1..uK base/test, u.item) from the generated ratings."""
    frame, _ = generate_ratings(60, 40, seed=3)
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_csv(folder / "u.data", sep="\t", header=False, index=False)
    fold_of = np.random.default_rng(0).integers(0, folds, len(frame))
    for k in range(folds):
        frame[fold_of != k].to_csv(folder / f"u{k + 1}.base", sep="\t", header=False, index=False)
        frame[fold_of == k].to_csv(folder / f"u{k + 1}.test", sep="\t", header=False, index=False)
    (folder / "u.item").write_text("".join(f"{i}|Movie {i} (1995)|01-Jan-1995||url|0\n" for i in range(1, 41)),
                                   encoding="latin-1")
    return frame


def _rows(dm: InteractionsDataModule, split: str) -> set[tuple[str, str]]:
    users, items, _ = dm.splits[split]
    return {(dm.user_ids[u] if u >= 0 else "?", dm.item_ids[i] if i >= 0 else "?")
            for u, i in zip(users.tolist(), items.tolist())}


def test_official_fold_matches_the_files_and_keeps_test_out_of_train(tmp_path: Path) -> None:
    _ml100k(tmp_path / "movielens" / "ml-100k")
    dm = MovieLensDataModule(str(tmp_path), fold=2)
    dm.setup()

    def read(name: str) -> pd.DataFrame:
        return pd.read_csv(tmp_path / "movielens" / "ml-100k" / name, sep="\t", header=None, dtype=str)

    base, test = read("u2.base"), read("u2.test")
    assert len(dm.splits["test"][0]) == len(test) and len(dm.splits["train"][0]) + len(dm.splits["val"][0]) == len(base)
    seen = set(zip(base[0], base[1]))
    known = {(u, i) for u, i in zip(test[0], test[1]) if u in dm.user_ids and i in dm.item_ids}
    assert _rows(dm, "test") - {("?", "?")} >= known and not (known & _rows(dm, "train"))
    assert not (seen & set(zip(test[0], test[1])))
    assert dm.item_titles[dm.item_ids.index("7")] == "Movie 7 (1995)"
    with pytest.raises(ZooUserError, match="fold 6 does not exist"):
        MovieLensDataModule(str(tmp_path), fold=6)
    with pytest.raises(ZooUserError, match="u3.base"):
        MovieLensDataModule(str(tmp_path), fold=3).setup()


def test_random_and_leave_last_out_splits_are_disjoint_and_seeded() -> None:
    a, b = InteractionsDataModule(seed=1), InteractionsDataModule(seed=1)
    a.setup(), b.setup()
    assert all(torch.equal(x, y) for s in a.splits for x, y in zip(a.splits[s], b.splits[s]))
    n = sum(len(a.splits[s][0]) for s in a.splits)
    assert n == len(generate_ratings(seed=1)[0]) and not (_rows(a, "train") & _rows(a, "test"))
    dm = InteractionsDataModule(split="leave_last_out", seed=1)
    dm.setup()
    frame = generate_ratings(seed=1)[0].astype(str)
    latest = frame.assign(t=frame.timestamp.astype(int)).sort_values("t").groupby("user").tail(1)
    users, items, _ = dm.splits["test"]
    got = {(dm.user_ids[u], dm.item_ids[i]) for u, i in zip(users.tolist(), items.tolist()) if i >= 0}
    assert got <= set(zip(latest.user, latest.item)) and len(users) == frame.user.nunique()


def test_negative_sampling_is_seeded_and_never_hits_a_positive() -> None:
    def batches(seed: int) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...], InteractionsDataModule]:
        dm = InteractionsDataModule(implicit=True, split="leave_last_out", negatives=3, seed=seed)
        return next(iter(dm.train_dataloader())), next(iter(dm.test_dataloader())), dm

    (train_a, test_a, dm), (train_b, test_b, _) = batches(5), batches(5)
    assert all(torch.equal(x, y) for x, y in zip(train_a + test_a, train_b + test_b))
    users, _, negatives = train_a
    positives = set(zip(*[t.tolist() for t in dm.train_interactions()[:2]]))
    assert negatives.shape == (len(users), 3)
    assert not {(u, n) for u, row in zip(users.tolist(), negatives.tolist()) for n in row} & positives
    users, candidates, relevant, seen = test_a
    assert candidates.shape[1] == 100 and relevant.gather(1, candidates[:, :1]).all()
    assert not relevant.gather(1, candidates[:, 1:]).any() and not seen.gather(1, candidates).any()


def _csv(path: Path, rows: list[tuple], header: str = "user,item,rating,timestamp") -> Path:
    path.write_text(header + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))
    return path


def test_reindexing_and_unseen_users_are_scored_by_biases(tmp_path: Path) -> None:
    frame, _ = generate_ratings(50, 30, seed=0)
    rows = [tuple(r) for r in frame.itertuples(index=False)]
    dm = InteractionsDataModule(path=str(_csv(tmp_path / "r.csv", rows)), test_fraction=0.3)
    dm.setup()
    assert dm.user_ids == sorted(dm.user_ids, key=int) and len(dm.item_ids) == dm.num_items
    model = MatrixFactorization(num_users=dm.num_users, num_items=dm.num_items, embedding_dim=4)
    model.fit_from(*dm.train_interactions())
    item = torch.tensor([0])
    expected = model.global_mean + model.item_bias.weight[0, 0]
    assert torch.allclose(model(torch.tensor([-1]), item), expected)  # a new user: global mean + item bias
    assert torch.isfinite(model.score_all(torch.tensor([-1, 0]))).all()
    bu, bi, mean = fit_biases(*dm.train_interactions(), dm.num_users, dm.num_items)
    assert torch.allclose(model.baseline_item, bi) and abs(mean - dm.train_interactions()[2].mean().item()) < 1e-6


def test_mf_recovers_the_low_rank_structure_better_than_biases(make_trainer) -> None:
    torch.manual_seed(0)
    dm = InteractionsDataModule(batch_size=1024, seed=0)
    model = MatrixFactorization(num_users=dm.num_users, num_items=dm.num_items, embedding_dim=16, l2=0.02, lr=1e-2)
    make_trainer(max_epochs=15).fit(model, datamodule=dm)
    result = make_trainer().test(model, datamodule=dm)[0]
    assert result["test/rmse"] < 0.93 * result["test/bias_rmse"] < 0.93 * result["test/global_mean_rmse"]


def test_autorec_encodes_the_training_matrix_and_falls_back_to_the_baseline() -> None:
    dm = InteractionsDataModule(seed=0)
    dm.setup()
    users, items, ratings = dm.train_interactions()
    model = AutoRec(num_users=dm.num_users, num_items=dm.num_items, hidden=8).eval()
    model.fit_from(users, items, ratings)
    assert torch.equal(model.ratings_matrix[items, users], ratings)
    assert model.ratings_matrix.count_nonzero() == len(users)  # every other entry is 0 (not rated)
    with torch.no_grad():
        pairs, table = model(users[:50], items[:50]), model.score_all(users[:50])
        assert torch.allclose(pairs, table[torch.arange(50), items[:50]], atol=1e-5)  # both paths agree
        new_user, new_item = model(torch.tensor([-1]), items[:1]), model(users[:1], torch.tensor([-1]))
        assert torch.allclose(new_user, model.global_mean + model.baseline_item[items[:1]])
        assert torch.allclose(new_item, model.global_mean + model.baseline_user[users[:1]])
        assert torch.allclose(model.score_all(torch.tensor([-1]))[0], model.global_mean + model.baseline_item)
        codes = model.item_embeddings()
    assert codes.shape == (dm.num_items, 8) and bool(((codes > 0) & (codes < 1)).all())


def test_autorec_beats_biases_and_reloads_to_its_test_rmse(tmp_path: Path) -> None:
    """Fit on the generated ratings; the reloaded checkpoint (weights and the saved rating matrix) scores the
    test split to the RMSE the run reported."""
    args = ["--model", "autorec", "--model.lr", "1e-2", "--max-epochs", "30",
            "--threads", "1", "--runs-dir", str(tmp_path / "runs")]
    assert main(args) == 0
    (metrics_file,) = (tmp_path / "runs" / "autorec").glob("*/metrics.json")
    metrics = json.loads(metrics_file.read_text())
    assert metrics["test/rmse"] < 0.92 * metrics["test/bias_rmse"] < 0.92 * metrics["test/global_mean_rmse"]
    _, model, _, _ = load_zoo_checkpoint(metrics["best_checkpoint"])
    dm = InteractionsDataModule()
    dm.setup()
    users, items, ratings = dm.splits["test"]
    with torch.no_grad():
        pred = model(users, items).clamp(*model.rating_range)
    assert (pred - ratings).pow(2).mean().sqrt().item() == pytest.approx(metrics["test/rmse"], abs=1e-5)


def test_ranking_metrics_match_a_hand_made_ranking() -> None:
    # user 0: 5 items, seen {0}, relevant {2, 4}; scores rank 1 > 2 > 3 > 4 (item 0 is excluded, though scored highest)
    # user 1: relevant {3}; scores rank 3 first.
    scores = torch.tensor([[9.0, 4.0, 3.0, 2.0, 1.0], [0.0, 1.0, 2.0, 5.0, 3.0]])
    relevant = torch.tensor([[0, 0, 1, 0, 1], [0, 0, 0, 1, 0]], dtype=torch.bool)
    seen = torch.tensor([[1, 0, 0, 0, 0], [0, 0, 0, 0, 0]], dtype=torch.bool)
    candidates = torch.tensor([[4, 1, 3], [3, 0, 1]])  # the held-out item first, then sampled negatives
    metrics = ranking_metrics(2)
    update_ranking(metrics, scores, torch.tensor([0, 1]), candidates, relevant, seen, k=2)
    full, sampled = metrics["full"].compute(), metrics["sampled"].compute()
    # user 0 top-2 (item 0 excluded) = [1, 2]: one hit; user 1 top-2 = [3, 4]: one hit
    assert full["precision@2"] == pytest.approx((1 / 2 + 1 / 2) / 2)
    assert full["recall@2"] == pytest.approx((1 / 2 + 1) / 2)
    assert full["full_hit_rate@2"] == pytest.approx(1.0)
    ndcg0 = (1 / np.log2(3)) / (1 + 1 / np.log2(3))  # hit at rank 2 of 2 relevant
    assert full["full_ndcg@2"] == pytest.approx((ndcg0 + 1.0) / 2, abs=1e-6)
    # sampled: user 0 ranks item 4 (score 1) below 1 and 3 -> miss at k=2; user 1 ranks item 3 first -> hit
    assert sampled["hit_rate@2"] == pytest.approx(0.5) and sampled["ndcg@2"] == pytest.approx(0.5)


def test_neumf_learns_to_rank_beyond_chance(make_trainer) -> None:
    torch.manual_seed(0)
    dm = InteractionsDataModule(implicit=True, split="leave_last_out", batch_size=512, negatives=2, eval_negatives=49)
    model = NeuMF(num_users=dm.num_users, num_items=dm.num_items, negatives=2, lr=5e-3)
    make_trainer(max_epochs=4).fit(model, datamodule=dm)
    result = make_trainer().test(model, datamodule=dm)[0]
    assert result["test/hit_rate@10"] > 0.35  # chance: 10 of 50 candidates = 0.2
    assert {"test/precision@10", "test/recall@10", "test/ndcg@10", "test/pop_hit_rate@10"} <= set(result)


def test_predict_writes_unseen_top_k_items_with_titles(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _ml100k(tmp_path / "ml-100k")
    runs = ["--runs-dir", str(tmp_path / "runs")]
    args = ["--model", "mf", "--data", "movielens", "--data-dir", str(tmp_path / "ml-100k"), "--max-epochs", "2",
            "--threads", "1", "--model.k", "3"]
    assert main([*args, *runs]) == 0
    (metrics_file,) = (tmp_path / "runs" / "mf").glob("*/metrics.json")
    metrics = json.loads(metrics_file.read_text())
    assert {"test/rmse", "test/mae", "test/bias_rmse", "test/global_mean_rmse", "test/unseen_items"} <= set(metrics)
    assert (metrics_file.parent / "artifacts").glob("rating_errors*.png")
    ckpt = torch.load(metrics["best_checkpoint"], weights_only=True)  # checkpoints are data
    assert "MovieLensDataModule" in ckpt
    (tmp_path / "users.txt").write_text("1\n2\nnobody\n")
    capsys.readouterr()
    predict = ["predict", "--ckpt-path", metrics["best_checkpoint"], *runs, "--input"]
    assert main([*predict, str(tmp_path / "users.txt")]) == 0
    out = Path(capsys.readouterr().out.split("predictions: ")[1].split()[0])
    rows = list(csv.DictReader(out.open()))
    assert [r["user"] for r in rows] == ["1"] * 3 + ["2"] * 3 + ["nobody"] * 3
    assert all(r["title"].startswith("Movie ") for r in rows)
    base = pd.read_csv(tmp_path / "ml-100k" / "u1.base", sep="\t", header=None, dtype=str)
    assert not {(r["user"], r["item"]) for r in rows} & set(zip(base[0], base[1]))  # rated items are never repeated
    (tmp_path / "items.txt").write_text("item:7\nitem:12\n")
    assert main([*predict, str(tmp_path / "items.txt")]) == 0
    out = Path(capsys.readouterr().out.split("predictions: ")[1].split()[0])
    rows = list(csv.DictReader(out.open()))
    assert out.name == "similar_items.csv" and [r["query_item"] for r in rows] == ["7"] * 3 + ["12"] * 3
    assert all(r["item"] != r["query_item"] and -1 <= float(r["cosine"]) <= 1 for r in rows)


def test_bad_inputs_raise_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    good = [(1, 1, 4, 1), (1, 2, 3, 2), (2, 1, 5, 3)]
    cases = [
        (_csv(tmp_path / "a.csv", good, "person,item,rating,timestamp"), "no user column"),
        (_csv(tmp_path / "b.csv", [(1, 1, "five", 1)]), "non-numeric rating 'five'"),
        (_csv(tmp_path / "c.csv", good[:1]), "split is empty"),
        (tmp_path / "missing.csv", "does not exist"),
    ]
    for path, message in cases:
        with pytest.raises(ZooUserError, match=message):
            InteractionsDataModule(path=str(path)).setup()
    with pytest.raises(ZooUserError, match="column 'stars' not in the data"):
        InteractionsDataModule(path=str(cases[0][0]), user_column="person", rating_column="stars").setup()
    code = main(["--model", "mf", "--data", "movielens", "--data-dir", str(tmp_path), "--data.fold", "9",
                 "--runs-dir", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert code == 2 and "fold 9 does not exist" in err and len(err.strip().splitlines()) == 1


def test_similar_items_rank_by_cosine_and_never_return_the_query() -> None:
    from zoo.models.recommender import RecommenderMixin

    class Toy(RecommenderMixin):
        def item_embeddings(self) -> torch.Tensor:
            return torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, -0.1]])

    items, sims = Toy().similar_items(torch.tensor([0, 2]), n=2)
    assert items.tolist() == [[1, 2], [1, 0]]
    assert sims[0, 0].item() == pytest.approx(0.9 / (0.9 ** 2 + 0.1 ** 2) ** 0.5) and sims[1, 1].item() == 0.0
    assert issubclass(MatrixFactorization, RecommenderMixin) and issubclass(NeuMF, RecommenderMixin)
