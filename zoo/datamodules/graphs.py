"""Graph data for the ``gnn`` model: node classification (Planetoid, karate club), link prediction
(``*_link``: RandomLinkSplit) and graph classification (TU data sets, a generated offline set).

Full-batch loaders yield the one graph once per epoch (one optimisation step per epoch);
``--data.sampler neighbor`` switches node classification to NeighborLoader mini-batches. Planetoid
and TU raw files are read from ``--data-dir`` and copied into a cache folder (PyG writes
``processed/`` next to ``raw/``), so the data dir is never written to.

Example:
    >>> dm = KarateDataModule()
    >>> dm.setup("fit")
    >>> batch = next(iter(dm.train_dataloader()))
    >>> (dm.in_channels, dm.num_classes, int(batch.train_mask.sum()))
    (34, 4, 16)
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, ClassVar, Literal, Sequence

import torch

from zoo.datamodules.base import SplitDataModule, stratified_split
from zoo.errors import ZooUserError

__all__ = ["FullBatchLoader", "NodeDataModule", "KarateDataModule", "PlanetoidDataModule", "CoraDataModule",
           "CiteSeerDataModule", "PubMedDataModule", "CoraLinkDataModule", "CiteSeerLinkDataModule",
           "PubMedLinkDataModule", "KarateLinkDataModule", "cache_root", "copy_raw", "find_raw",
           "degree_one_hot", "neighbor_sampling_available"]

NodeTask = Literal["node", "link"]
PLANETOID_PARTS = ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index")


def cache_root() -> Path:
    """Where raw graph files are copied and processed: ``$ZOO_CACHE_DIR`` or ``~/.cache/lightning-zoo``."""
    return Path(os.environ.get("ZOO_CACHE_DIR", Path.home() / ".cache" / "lightning-zoo")).expanduser()


class FullBatchLoader:
    """Yields one graph once per epoch: full-batch training takes one optimisation step per epoch."""

    def __init__(self, data: Any) -> None:
        self.data = data

    def __len__(self) -> int:
        return 1

    def __iter__(self):
        yield self.data


def find_raw(folders: Sequence[Path], names: Sequence[str]) -> tuple[Path | None, Path, list[str]]:
    """(first folder holding every name or None, the folder closest to complete, names missing there)."""
    best, best_missing = folders[0], list(names)
    for folder in folders:
        missing = [n for n in names if not (folder / n).is_file()]
        if not missing:
            return folder, folder, []
        if len(missing) < len(best_missing):
            best, best_missing = folder, missing
    return None, best, best_missing


def copy_raw(files: Sequence[Path], dest: Path) -> None:
    """Copy files into ``dest`` (atomically, skipping those already there with the same size)."""
    dest.mkdir(parents=True, exist_ok=True)
    for f in files:
        target = dest / f.name
        if not target.is_file() or target.stat().st_size != f.stat().st_size:
            tmp = dest / f".{f.name}.{os.getpid()}.tmp"
            shutil.copyfile(f, tmp)
            os.replace(tmp, target)


def neighbor_sampling_available() -> bool:
    """PyG's NeighborLoader needs the compiled pyg-lib or torch-sparse package."""
    import torch_geometric.typing as pyg_typing

    return bool(pyg_typing.WITH_PYG_LIB or pyg_typing.WITH_TORCH_SPARSE)


def degree_one_hot(edge_index: torch.Tensor, num_nodes: int, max_degree: int) -> torch.Tensor:
    """One-hot node degree, degrees above ``max_degree`` clipped: features for featureless graphs."""
    deg = torch.bincount(edge_index[0], minlength=num_nodes).clamp(max=max_degree)
    return torch.nn.functional.one_hot(deg, max_degree + 1).float()


class _GraphBase(SplitDataModule):
    """Lazy loading and the shapes linked into the model (``in_channels``, ``num_classes``, ``task``).

    Args:
        cache_dir: where processed graphs are cached (default: the user cache folder, never the data folder).
    """

    link_fields = ("in_channels", "num_classes", "task")

    def __init__(self, data_dir: str | None = None, batch_size: int = 512, num_workers: int = 0, seed: int = 42,
                 cache_dir: str | None = None) -> None:
        super().__init__(data_dir, batch_size, num_workers, seed)
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else cache_root()
        self._loaded: Any = None
        self.splits: dict[str, Any] = {}

    def load(self) -> Any:
        raise NotImplementedError

    def predict_dataloader(self):
        return self._loader("predict", False)

    def predict_input(self, path: str) -> Any:
        """``train.py predict --input DIR``: predictions for every node / graph / test edge of the data in
        DIR, a folder laid out like ``--data-dir`` (built-in sets such as ``karate`` need no files)."""
        folder = Path(path).expanduser()
        if not folder.is_dir():
            raise ZooUserError(f"graph models predict on a folder laid out like --data-dir (the graph's files), not "
                               f"the file '{path}'; pass the data folder (any folder for a built-in graph)")
        self.data_dir = folder
        self._loaded, self.splits = None, {}
        return self.predict_dataloader()

    @property
    def loaded(self) -> Any:
        if self._loaded is None:
            with torch.random.fork_rng():  # PyG's random splits draw from the global RNG
                torch.manual_seed(self.seed)
                self._loaded = self.load()
        return self._loaded

    def _local_raw(self, what: str, folders: Sequence[Path], names: Sequence[str], dest: Path, how: str) -> bool:
        """Copy ``names`` from the first complete folder into ``dest``; False when downloading instead."""
        if self.data_dir is None:
            if getattr(self, "download", False):
                return False
            raise ZooUserError(f"{what} needs --data-dir; {how}")
        found, best, missing = find_raw(folders, names)
        if found is None:
            if getattr(self, "download", False):
                return False
            raise ZooUserError(f"{what}: missing {', '.join(missing)} in '{best}'; {how}")
        copy_raw([found / n for n in names], dest)
        return True


class NodeDataModule(_GraphBase):
    """One graph with train/val/test node masks (``task="node"``) or a RandomLinkSplit (``task="link"``).

    Args:
        task: ``node`` (node classification) or ``link`` (edges split ``1 - val_edges - test_edges`` /
            ``val_edges`` / ``test_edges``; validation and test edges are not in the training graph).
        val_edges / test_edges: shares of the edges held out for link validation / test.
        sampler: ``full`` (whole graph per step) or ``neighbor`` (NeighborLoader, node task only).
        num_neighbors / batch_size: NeighborLoader fan-out per layer and seed nodes per batch.
    """

    def __init__(self, data_dir: str | None = None, task: NodeTask = "node",
                 sampler: Literal["full", "neighbor"] = "full", num_neighbors: tuple[int, ...] = (25, 10),
                 batch_size: int = 512, val_edges: float = 0.05, test_edges: float = 0.1, num_workers: int = 0,
                 seed: int = 42, cache_dir: str | None = None) -> None:
        super().__init__(data_dir, batch_size, num_workers, seed, cache_dir)
        if task not in ("node", "link"):
            raise ZooUserError(f"unknown task '{task}' for a node-level graph; choose --data.task node|link")
        if sampler not in ("full", "neighbor"):
            raise ZooUserError(f"unknown sampler '{sampler}'; choose --data.sampler full|neighbor")
        if sampler == "neighbor" and task == "link":
            raise ZooUserError("--data.sampler neighbor is for node classification; use sampler full for links")
        if not (0 < val_edges < 1 and 0 < test_edges < 1 and val_edges + test_edges < 1):
            raise ZooUserError(f"val_edges + test_edges must be in (0, 1), got {val_edges} + {test_edges}")
        if sampler == "neighbor" and not neighbor_sampling_available():
            raise ZooUserError("--data.sampler neighbor needs pyg-lib or torch-sparse (not installed); install one "
                               "from https://data.pyg.org/whl/ or use --data.sampler full")
        self.task, self.sampler, self.num_neighbors = task, sampler, tuple(num_neighbors)
        self.val_edges, self.test_edges = val_edges, test_edges
        self._on_device: dict[tuple[int, str], Any] = {}

    @property
    def in_channels(self) -> int:
        return int(self.loaded.num_features)

    @property
    def num_classes(self) -> int:
        return int(self.loaded.y.max()) + 1

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        data = self.loaded
        if self.task == "node":
            self.splits = {"train": data, "val": data, "test": data, "predict": data}
            return
        from torch_geometric.transforms import RandomLinkSplit

        split = RandomLinkSplit(num_val=self.val_edges, num_test=self.test_edges, is_undirected=True,
                                add_negative_train_samples=False, split_labels=True)
        with torch.random.fork_rng():
            torch.manual_seed(self.seed)
            train, val, test = split(data)
        self.splits = {"train": train, "val": val, "test": test, "predict": test}

    def _loader(self, split: str, train: bool = False) -> Any:
        self.setup()
        data = self.splits[split]
        if self.sampler == "full":
            return FullBatchLoader(data)
        from torch_geometric.loader import NeighborLoader

        nodes = None if split == "predict" else data[f"{split}_mask"]
        return NeighborLoader(data, num_neighbors=list(self.num_neighbors), input_nodes=nodes,
                              batch_size=self.batch_size, shuffle=train, num_workers=self.num_workers)

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        """Full-batch graphs move to the accelerator once, not every epoch."""
        if self.sampler != "full" or device.type == "cpu":
            return super().transfer_batch_to_device(batch, device, dataloader_idx)
        key = (id(batch), str(device))
        if key not in self._on_device:
            self._on_device[key] = super().transfer_batch_to_device(batch, device, dataloader_idx)
        return self._on_device[key]


class KarateDataModule(NodeDataModule):
    """Zachary's karate club (34 members, 4 communities) bundled with PyG: the offline default.

    Nodes are split 50/25/25 (train/val/test), stratified and seeded; features are one-hot ids.
    """

    def load(self) -> Any:
        from torch_geometric.datasets import KarateClub

        data = KarateClub()[0]
        rest, test = stratified_split(data.y, 0.25, self.seed)
        train, val = stratified_split(data.y[rest], 1 / 3, self.seed)
        for name, idx in (("train", rest[train]), ("val", rest[val]), ("test", test)):
            mask = torch.zeros(data.num_nodes, dtype=torch.bool)
            mask[idx] = True
            data[f"{name}_mask"] = mask
        return data


class PlanetoidDataModule(NodeDataModule):
    """A Planetoid citation graph (PyG ``Planetoid``) from ``<data_dir>/planetoid/<Name>/raw``.

    Args:
        split: ``public`` (Planetoid's 20 labels per class / 500 val / 1000 test), ``full`` or ``random``.
        normalize_features: row-normalise bag-of-words features (as in the GCN and GAT papers).
        download: fetch the raw files into ``cache_dir`` when they are not under ``data_dir`` (online).
        cache_dir: where raw files are copied and processed (default ``~/.cache/lightning-zoo``).
    """

    dataset_name: ClassVar[str] = "Cora"

    def __init__(self, data_dir: str | None = None, split: Literal["public", "full", "random"] = "public",
                 normalize_features: bool = True, download: bool = False, **kwargs: Any) -> None:
        super().__init__(data_dir, **kwargs)
        if split not in ("public", "full", "random"):
            raise ZooUserError(f"unknown split '{split}'; choose --data.split public|full|random")
        self.split, self.normalize_features, self.download = split, normalize_features, download

    def load(self) -> Any:
        from torch_geometric.datasets import Planetoid
        from torch_geometric.transforms import NormalizeFeatures

        name, stem = self.dataset_name, self.dataset_name.lower()
        root = self.cache_dir / "planetoid"
        names = [f"ind.{stem}.{part}" for part in PLANETOID_PARTS]
        how = (f"put the 8 Planetoid files ind.{stem}.{{{','.join(PLANETOID_PARTS)}}} "
               f"in <data-dir>/planetoid/{name}/raw"
               " (e.g. --data-dir ../shared/data) or add --data.download true when online")
        d = self.data_dir
        folders = [d / "planetoid" / name / "raw", d / name / "raw", d / "raw", d] if d is not None else []
        self._local_raw(name, folders, names, root / name / "raw", how)
        transform = NormalizeFeatures() if self.normalize_features else None
        return Planetoid(str(root), name, split=self.split, transform=transform)[0]


class CoraDataModule(PlanetoidDataModule):
    """Cora citation graph: 2,708 papers, 1,433 word features, 7 classes (Planetoid public split)."""

    dataset_name = "Cora"


class CiteSeerDataModule(PlanetoidDataModule):
    """CiteSeer citation graph: 3,327 papers, 3,703 features, 6 classes (Planetoid public split)."""

    dataset_name = "CiteSeer"


class PubMedDataModule(PlanetoidDataModule):
    """PubMed citation graph: 19,717 papers, 500 features, 3 classes (Planetoid public split)."""

    dataset_name = "PubMed"


class CoraLinkDataModule(CoraDataModule):
    """Cora with its edges split 85/5/10 (train/val/test) for link prediction (GAE setting)."""

    def __init__(self, data_dir: str | None = None, task: NodeTask = "link", **kwargs: Any) -> None:
        super().__init__(data_dir, task=task, **kwargs)

class CiteSeerLinkDataModule(CiteSeerDataModule):
    """CiteSeer with its edges split 85/5/10 (train/val/test) for link prediction (GAE setting)."""

    def __init__(self, data_dir: str | None = None, task: NodeTask = "link", **kwargs: Any) -> None:
        super().__init__(data_dir, task=task, **kwargs)

class PubMedLinkDataModule(PubMedDataModule):
    """PubMed with its edges split 85/5/10 (train/val/test) for link prediction (GAE setting)."""

    def __init__(self, data_dir: str | None = None, task: NodeTask = "link", **kwargs: Any) -> None:
        super().__init__(data_dir, task=task, **kwargs)

class KarateLinkDataModule(KarateDataModule):
    """The karate club with its edges split 85/5/10 (train/val/test) for link prediction (GAE setting)."""

    def __init__(self, data_dir: str | None = None, task: NodeTask = "link", **kwargs: Any) -> None:
        super().__init__(data_dir, task=task, **kwargs)
