"""User-item interactions for recommenders: explicit ratings (RMSE) or implicit feedback (ranking).

Ids are re-indexed from the training rows (``user_ids`` / ``item_ids`` hold the raw ids); a user or
item first seen in validation or test gets index -1, which the models score with biases or item
popularity. Explicit batches are ``(users, items, ratings)``. Implicit training batches are ``(users,
positive items, negatives [B, N])`` with ``N = negatives`` drawn per batch from the user's non-training
items; implicit evaluation batches are one row per user: ``(users, candidates [B, 1 + eval_negatives]``
(column 0 the held-out item, then sampled negatives, the NCF protocol), ``relevant [B, I]``, ``seen [B, I]``
(training items, excluded from the full ranking)).

Example:
    >>> dm = InteractionsDataModule(batch_size=256)
    >>> dm.setup("fit")
    >>> users, items, ratings = next(iter(dm.train_dataloader()))
    >>> users.shape, dm.num_users > 0
    (torch.Size([256]), True)
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Literal

import numpy as np
import pandas as pd
import torch

from zoo.datamodules.base import InMemoryDataModule
from zoo.errors import ZooUserError

__all__ = ["InteractionsDataModule", "MovieLensDataModule", "generate_ratings"]

Split = Literal["fold", "random", "leave_last_out"]
CANDIDATES = {"user": ("user", "user_id", "userId", "userid"),
              "item": ("item", "item_id", "itemId", "movieId", "movie_id"),
              "rating": ("rating", "ratings", "score"), "time": ("timestamp", "time", "ts", "date")}


def generate_ratings(num_users: int = 400, num_items: int = 300, rank: int = 4, mean_per_user: int = 40,
                     noise: float = 0.4, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """A seeded ratings table and its noise-free scores [num_users, num_items].

    Scores are ``3.4 + user bias + item bias + 2 u·v`` with rank-``rank`` factors. Which pairs are observed is
    missing-not-at-random: Zipf-like item popularity (exponent 0.8), log-normal user activity, and a
    preference for well-liked items (log-odds +1.5 per rating point); ratings are the rounded, clipped
    noisy scores (1-5) and timestamps are random.
    """
    rng = np.random.default_rng(seed)
    u = rng.normal(0, 0.9 / rank ** 0.5, (num_users, rank))
    v = rng.normal(0, 0.9 / rank ** 0.5, (num_items, rank)) * rng.uniform(0.5, 1.5, (num_items, 1)) ** 0.5
    truth = 3.4 + rng.normal(0, 0.3, (num_users, 1)) + rng.normal(0, 0.4, (1, num_items)) + u @ v.T * 2.0
    popularity = 1.0 / (1 + rng.permutation(num_items)) ** 0.8
    logits = np.log(popularity)[None] + 1.5 * (truth - truth.mean()) + rng.gumbel(size=truth.shape)
    counts = np.clip(rng.lognormal(np.log(mean_per_user), 0.6, num_users).round(), 5, num_items // 2).astype(int)
    order = np.argsort(-logits, axis=1)
    users = np.repeat(np.arange(num_users), counts)
    items = np.concatenate([order[k, :c] for k, c in enumerate(counts)])
    ratings = np.clip(np.round(truth[users, items] + rng.normal(0, noise, len(users))), 1, 5)
    frame = pd.DataFrame({"user": users + 1, "item": items + 1, "rating": ratings,
                          "timestamp": rng.integers(8e8, 9e8, len(users))})
    return frame, truth


def _id_order(raw: str) -> tuple[int, str]:
    """Numeric ids in numeric order ("2" before "10"), then any other strings."""
    return (len(raw), raw) if raw.isdigit() else (1 << 30, raw)


def _key(users: torch.Tensor, items: torch.Tensor, num_items: int) -> torch.Tensor:
    return users.long() * num_items + items.long()


def _contains(sorted_keys: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    pos = torch.searchsorted(sorted_keys, keys).clamp(max=max(len(sorted_keys) - 1, 0))
    return sorted_keys[pos] == keys if len(sorted_keys) else torch.zeros_like(keys, dtype=torch.bool)


def sample_negatives(users: torch.Tensor, count: int, num_items: int, known: torch.Tensor,
                     gen: torch.Generator) -> torch.Tensor:
    """[len(users), count] items drawn uniformly among those with no key in ``known`` (sorted user*I+item)."""
    neg = torch.randint(num_items, (len(users), count), generator=gen)
    for _ in range(200):  # rejection: resample the collisions (a few rounds unless users saw almost everything)
        bad = _contains(known, _key(users[:, None].expand_as(neg), neg, num_items))
        if not bad.any():
            return neg
        neg[bad] = torch.randint(num_items, (int(bad.sum()),), generator=gen)
    raise ZooUserError("cannot sample negatives: some users interacted with nearly every item; lower "
                       "--data.eval_negatives / --model.negatives")


def _padded(groups: list[np.ndarray]) -> torch.Tensor:
    out = torch.full((len(groups), max([len(g) for g in groups] + [1])), -1, dtype=torch.long)
    for row, g in enumerate(groups):
        out[row, : len(g)] = torch.tensor(np.asarray(g), dtype=torch.long)
    return out


class InteractionsDataModule(InMemoryDataModule):
    """User-item ratings from any CSV/TSV (``--data.path``), or a generated set (the offline default).

    Args:
        data_dir: folder that a relative ``path`` is read from.
        path: CSV/TSV file with a header, one interaction per row (``.tsv`` / ``.data``: tab-separated);
            None generates a seeded set (:func:`generate_ratings`: low rank, popularity skew, MNAR).
        user_column / item_column / rating_column / time_column: column names; None looks for the usual
            names (user/userId, item/movieId, rating, timestamp). Implicit data may lack ratings.
        split: ``random`` (``test_fraction`` of the rows), ``leave_last_out`` (each user's latest row is
            the test row, the one before it validation), or ``fold`` (the official ml-100k folds, data ``movielens``).
        fold: which official fold ``u{fold}.base`` / ``u{fold}.test`` (1-5) with ``split fold``.
        test_fraction / val_fraction: shares of the rows (``random``) and of the training rows (validation).
        implicit: treat interactions as implicit feedback (ranking metrics, negative sampling).
        positive_threshold: with ``implicit``, rows with a rating >= this are the positives (None: all rows).
        negatives: sampled negatives per positive in implicit training (the CLI copies ``--model.negatives``).
        eval_negatives: sampled negatives the held-out item is ranked among (NCF protocol: 99).
        generated_users / generated_items: size of the generated set.
        batch_size / num_workers / seed: loader settings and the seed of every split and sample.
    """

    link_fields = ("num_users", "num_items")
    link_from_model = ("negatives",)

    def __init__(self, data_dir: str | None = None, path: str | None = None, user_column: str | None = None,
                 item_column: str | None = None, rating_column: str | None = None, time_column: str | None = None,
                 split: Split = "random", fold: int = 1, test_fraction: float = 0.2, val_fraction: float = 0.05,
                 implicit: bool = False, positive_threshold: float | None = None, negatives: int = 4,
                 eval_negatives: int = 99, generated_users: int = 400, generated_items: int = 300,
                 batch_size: int = 4096, num_workers: int = 0, seed: int = 42) -> None:
        super().__init__(data_dir, batch_size, num_workers, seed)
        if split not in ("fold", "random", "leave_last_out"):
            raise ZooUserError(f"split must be fold, random or leave_last_out, got '{split}'")
        for name, value in (("test_fraction", test_fraction), ("val_fraction", val_fraction)):
            if not 0.0 < value < 1.0:
                raise ZooUserError(f"{name} must be in (0, 1), got {value}")
        if negatives < 1 or eval_negatives < 1:
            raise ZooUserError(f"negatives and eval_negatives must be >= 1, got {negatives} and {eval_negatives}")
        self.path, self.split, self.fold, self.implicit = path, split, fold, implicit
        self.columns = {"user": user_column, "item": item_column, "rating": rating_column, "time": time_column}
        self.test_fraction, self.val_fraction, self.positive_threshold = test_fraction, val_fraction, positive_threshold
        self.negatives, self.eval_negatives = negatives, eval_negatives
        self.generated_users, self.generated_items = generated_users, generated_items
        self.splits: dict[str, tuple[torch.Tensor, ...]] = {}
        self.user_ids: list[str] = []
        self.item_ids: list[str] = []
        self.item_titles: list[str] = []
        self.unseen: dict[str, dict[str, int]] = {}
        self._train_keys = torch.zeros(0, dtype=torch.long)
        self._seen_state: dict[int, np.ndarray] = {}  # known items per user, restored from a checkpoint
        self._known: tuple[torch.Tensor, ...] = ()  # (users, items) of training + validation: never recommended again

    # ---- reading ---------------------------------------------------------------------------------
    def _column(self, frame: pd.DataFrame, role: str, required: bool) -> str | None:
        name = self.columns[role]
        if name is None:
            name = next((c for c in CANDIDATES[role] if c in frame.columns), None)
        if name is not None and name not in frame.columns:
            raise ZooUserError(f"column '{name}' not in the data (columns: {', '.join(map(str, frame.columns))}); "
                               f"set --data.{role}_column")
        if name is None and required:
            raise ZooUserError(f"no {role} column among {', '.join(map(str, frame.columns))}; set --data.{role}_column")
        return name

    def read_table(self, path: Path) -> pd.DataFrame:
        """A table of user, item, rating, time (str ids; float ratings) from a CSV/TSV with a header."""
        if not path.is_file():
            raise ZooUserError(f"ratings file '{path}' does not exist; pass --data.path FILE (CSV/TSV with a header)")
        sep = "\t" if path.suffix in (".tsv", ".data") else ","
        try:
            frame = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
        except (pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise ZooUserError(f"cannot parse '{path}' as CSV/TSV: {str(exc).splitlines()[0]}") from exc
        return self._normalise(frame, str(path))

    def _normalise(self, frame: pd.DataFrame, source: str) -> pd.DataFrame:
        cols = {role: self._column(frame, role, role in ("user", "item") or (role == "rating" and not self.implicit))
                for role in CANDIDATES}
        out = pd.DataFrame({"user": frame[cols["user"]].astype(str), "item": frame[cols["item"]].astype(str)})
        for role in ("rating", "time"):
            if cols[role] is not None:
                values = pd.to_numeric(frame[cols[role]], errors="coerce")
                if role == "time" and values.isna().any():  # dates such as 2024-05-01 13:00
                    dates = pd.to_datetime(frame[cols[role]], errors="coerce", format="mixed")
                    values = (dates - pd.Timestamp(0)).dt.total_seconds()
                if values.isna().any():
                    bad = frame[cols[role]][values.isna()].iloc[0]
                    raise ZooUserError(f"non-numeric {role} '{bad}' in column '{cols[role]}' of {source}; fix or "
                                       f"drop those rows")
                out[role] = values.astype(float)
        if "rating" not in out:
            out["rating"] = 1.0
        return out

    def load_tables(self) -> tuple[pd.DataFrame, pd.DataFrame | None]:
        """(all rows, or the training rows of an official fold; that fold's test rows or None)."""
        if self.split == "fold":
            raise ZooUserError("split 'fold' needs the official ml-100k files; use --data movielens --data-dir DIR")
        if self.path is None:
            if self.data_dir is not None:
                raise ZooUserError("data 'ratings' needs --data.path FILE; for ml-100k use --data movielens")
            frame, _ = generate_ratings(self.generated_users, self.generated_items, seed=self.seed)
            return self._normalise(frame.astype(str), "the generated set"), None
        path = Path(self.path).expanduser()
        if not path.is_absolute() and self.data_dir is not None and not path.exists():
            path = self.data_dir / path
        return self.read_table(path), None

    # ---- splitting -------------------------------------------------------------------------------
    def _split(self, frame: pd.DataFrame, test: pd.DataFrame | None) -> dict[str, pd.DataFrame]:
        rng = np.random.default_rng(self.seed)
        if self.split == "leave_last_out":
            order = frame.assign(_r=rng.random(len(frame))).sort_values(["user", "time", "_r"] if "time" in frame
                                                                         else ["user", "_r"], kind="stable")
            rank = order.groupby("user").cumcount(ascending=False)
            size = order.groupby("user")["item"].transform("size")
            keep = size >= 3  # users with fewer rows keep them all for training
            return {"train": order[(rank >= 2) | ~keep], "val": order[(rank == 1) & keep],
                    "test": order[(rank == 0) & keep]}
        if test is None:
            perm = rng.permutation(len(frame))
            cut = int(round(len(frame) * self.test_fraction))
            test, frame = frame.iloc[np.sort(perm[:cut])], frame.iloc[np.sort(perm[cut:])]
        perm = rng.permutation(len(frame))
        cut = int(round(len(frame) * self.val_fraction))
        return {"train": frame.iloc[np.sort(perm[cut:])], "val": frame.iloc[np.sort(perm[:cut])], "test": test}

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        frame, test = self.load_tables()
        if self.implicit and self.positive_threshold is not None:
            frame = frame[frame["rating"] >= self.positive_threshold]
            test = None if test is None else test[test["rating"] >= self.positive_threshold]
        parts = self._split(frame, test)
        for name, part in parts.items():
            if len(part) == 0:
                raise ZooUserError(f"the {name} split is empty ({len(frame)} rows read); use more data or other "
                                   "--data.split / --data.test_fraction / --data.val_fraction")
        self.user_ids, self.item_ids = (sorted(parts["train"][c].unique(), key=_id_order) for c in ("user", "item"))
        tensors = {name: self._encode(part) for name, part in parts.items()}
        self.splits = {"train": tensors["train"]}
        known = torch.cat([torch.stack(tensors[s][:2]) for s in ("train", "val")], 1)
        self._known = tuple(known[:, (known >= 0).all(0)])
        self._train_keys = torch.sort(_key(*tensors["train"][:2], self.num_items)).values
        self.unseen = {s: {"users": int((tensors[s][0] < 0).sum()),
                           "items": int(((tensors[s][0] >= 0) & (tensors[s][1] < 0)).sum())} for s in ("val", "test")}
        if self.implicit:
            self._ranking_splits(tensors)
        else:
            self.splits |= {"val": tensors["val"], "test": tensors["test"]}

    def _encode(self, part: pd.DataFrame) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        users = pd.Index(self.user_ids).get_indexer(part["user"])
        items = pd.Index(self.item_ids).get_indexer(part["item"])
        return (torch.as_tensor(users, dtype=torch.long), torch.as_tensor(items, dtype=torch.long),
                torch.tensor(part["rating"].to_numpy(), dtype=torch.float32))

    @staticmethod
    def _user_items(users: torch.Tensor, items: torch.Tensor) -> dict[int, np.ndarray]:
        """{user index: its item indices in row order} for the rows with a known user and item."""
        ok = (users >= 0) & (items >= 0)
        frame = pd.DataFrame({"u": users[ok].numpy(), "i": items[ok].numpy()})
        return {int(k): g.to_numpy() for k, g in frame.groupby("u", sort=True)["i"]}

    def _ranking_splits(self, tensors: dict[str, tuple[torch.Tensor, ...]]) -> None:
        """val / test as one row per user: (user, candidates, relevant items, seen items), padded with -1.

        Candidates are the user's last held-out item and ``eval_negatives`` items the user never interacted
        with; seen items (excluded from the full ranking) are the training items, for test also validation's.
        """
        gen = torch.Generator().manual_seed(self.seed + 17)
        pairs = torch.cat([torch.stack(t[:2], 1) for t in tensors.values()])
        pairs = pairs[(pairs >= 0).all(1)]
        every = torch.sort(_key(pairs[:, 0], pairs[:, 1], self.num_items)).values
        train, val = self._user_items(*tensors["train"][:2]), self._user_items(*tensors["val"][:2])
        empty = np.zeros(0, dtype=np.int64)
        for split, seen_in in (("val", (train,)), ("test", (train, val))):
            relevant = self._user_items(*tensors[split][:2])
            users = torch.as_tensor(list(relevant), dtype=torch.long)
            held = torch.as_tensor([r[-1] for r in relevant.values()], dtype=torch.long)
            negatives = sample_negatives(users, self.eval_negatives, self.num_items, every, gen)
            seen = [np.concatenate([s.get(u, empty) for s in seen_in]) for u in relevant]
            self.splits[split] = (users, torch.cat([held[:, None], negatives], 1), _padded(list(relevant.values())),
                                  _padded(seen))

    # ---- what the model and predict use --------------------------------------------------------------
    @property
    def num_users(self) -> int:
        if not self.user_ids:
            self.setup()
        return len(self.user_ids)

    @property
    def num_items(self) -> int:
        if not self.item_ids:
            self.setup()
        return len(self.item_ids)

    def train_interactions(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(user indices, item indices, ratings) of the training rows."""
        self.setup()
        return self.splits["train"]

    def item_popularity(self) -> torch.Tensor:
        """Training interactions per item [num_items] (float)."""
        return torch.bincount(self.train_interactions()[1], minlength=self.num_items).float()

    def _mask(self, pad: torch.Tensor) -> torch.Tensor:
        mask = torch.zeros(len(pad), self.num_items + 1, dtype=torch.bool)
        mask.scatter_(1, torch.where(pad < 0, self.num_items, pad), True)
        return mask[:, : self.num_items]

    def batch_transform(self, train: bool):
        if not self.implicit:
            return None

        def implicit_batch(batch: tuple[torch.Tensor, ...], gen: torch.Generator) -> tuple[torch.Tensor, ...]:
            if train:
                users, items, _ = batch
                return users, items, sample_negatives(users, self.negatives, self.num_items, self._train_keys, gen)
            users, candidates, relevant, seen = batch
            return users, candidates, self._mask(relevant), self._mask(seen)

        return implicit_batch

    # ---- predict: top-k items for the users listed in a file -------------------------------------------
    def predict_input(self, path: str) -> Iterable[Any]:
        """Batches ``(users, seen mask)`` for the raw user ids in ``path`` (one per line; a line ``all``: every
        training user), or ``(items,)`` when every line is ``item:ID`` (similar items by embedding). Unknown
        users get index -1 (scored by popularity / biases); the ids go to ``predict_names``."""
        if not self.user_ids:
            self.setup()
        source = Path(path).expanduser()
        lines = source.read_text().splitlines() if source.exists() else [path]  # `all` needs no file
        names = [line.strip() for line in lines if line.strip()]
        if names == ["all"]:
            names = list(self.user_ids)
        if not names:
            raise ZooUserError(f"'{path}' lists no user ids; write one raw user id per line, or the word all")
        if all(n.startswith("item:") for n in names):  # similar items by embedding
            raw = [n[len("item:"):].strip() for n in names]
            items = torch.as_tensor(pd.Index(self.item_ids).get_indexer(raw), dtype=torch.long)
            if (items < 0).any():
                raise ZooUserError(f"item '{raw[int((items < 0).nonzero()[0])]}' has no training interactions; "
                                   "similar items need an item id from the training data")
            self.predict_names, self.predict_kind = raw, "similar"
            return self.make_loader((items,), train=False)
        users = torch.as_tensor(pd.Index(self.user_ids).get_indexer(names), dtype=torch.long)
        known = self._user_items(*self._known) if self._known else self._seen_state
        seen = _padded([known.get(int(u), np.zeros(0, dtype=np.int64)) for u in users])
        self.predict_names, self.predict_kind = names, "users"
        return self.make_loader((users, seen), train=False, transform=lambda b, g: (b[0], self._mask(b[1])))

    def item_label(self, index: int) -> tuple[str, str]:
        """(raw item id, title or '') of an item index."""
        return self.item_ids[index], self.item_titles[index] if self.item_titles else ""

    # ---- checkpointed state: ids, titles and training items, so predict needs no data files ---------------
    def state_dict(self) -> dict[str, Any]:
        if not self.splits:
            return {}
        users, items = self._known
        return {"user_ids": list(self.user_ids), "item_ids": list(self.item_ids), "item_titles": list(self.item_titles),
                "known_users": users.clone(), "known_items": items.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self.user_ids, self.item_ids = list(state["user_ids"]), list(state["item_ids"])
            self.item_titles = list(state["item_titles"])
            self._seen_state = self._user_items(state["known_users"], state["known_items"])


class MovieLensDataModule(InteractionsDataModule):
    """MovieLens ml-100k from ``--data-dir`` (``u.data``, the official folds ``u1..u5``, titles from ``u.item``).

    Args:
        data_dir: the ml-100k folder, or one holding ``movielens/ml-100k`` or ``ml-100k`` (``../shared/data``).
        split: ``fold`` (``u{fold}.base`` / ``u{fold}.test``, the default), ``random`` or ``leave_last_out``
            over ``u.data``.
        fold: the official fold, 1-5.
    """

    HOW = "point --data-dir at the ml-100k folder (u.data, u1.base ... u5.test, u.item), e.g. ../shared/data"

    def __init__(self, data_dir: str | None = None, split: Split = "fold", fold: int = 1, **kwargs: Any) -> None:
        super().__init__(data_dir, split=split, fold=fold, **kwargs)
        if split == "fold" and fold not in range(1, 6):
            raise ZooUserError(f"fold {fold} does not exist; ml-100k has the official folds 1-5 (--data.fold)")

    def _root(self) -> Path:
        root = self.require_data_dir("data 'movielens'", self.HOW)
        for folder in (root, root / "ml-100k", root / "movielens" / "ml-100k"):
            if (folder / "u.data").is_file():
                return folder
        raise ZooUserError(f"no ml-100k u.data under '{root}'; {self.HOW}")

    def _read(self, name: str) -> pd.DataFrame:
        path = self._root() / name
        if not path.is_file():
            raise ZooUserError(f"'{path}' does not exist; {self.HOW}")
        frame = pd.read_csv(path, sep="\t", names=["user", "item", "rating", "timestamp"], dtype=str,
                            keep_default_na=False)
        return self._normalise(frame, str(path))

    def load_tables(self) -> tuple[pd.DataFrame, pd.DataFrame | None]:
        """The fold's base / test rows; other splits read fold 1's two files together, the 100,000 official
        ratings (the copy of ``u.data`` in ``../shared/data`` has 349 extra rows from users 995-998)."""
        if self.split == "fold":
            return self._read(f"u{self.fold}.base"), self._read(f"u{self.fold}.test")
        if (self._root() / "u1.test").is_file():
            return pd.concat([self._read("u1.base"), self._read("u1.test")], ignore_index=True), None
        return self._read("u.data"), None

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        super().setup(stage)
        path = self._root() / "u.item"
        if path.is_file():
            items = pd.read_csv(path, sep="|", encoding="latin-1", header=None, usecols=[0, 1], dtype=str)
            titles = dict(zip(items[0], items[1]))
            self.item_titles = [titles.get(i, "") for i in self.item_ids]
