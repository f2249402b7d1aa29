"""Graph classification data for the ``gnn`` model: TU data sets and a generated offline set.

Graphs are split stratified and seeded (train / val / test) and batched by PyG's ``DataLoader``.

Example:
    >>> dm = SyntheticGraphsDataModule(num_graphs=60)
    >>> dm.setup("fit")
    >>> (dm.task, dm.num_classes, dm.in_channels)
    ('graph', 3, 11)
"""
from __future__ import annotations

from typing import Any

import torch

from zoo.datamodules.graphs import _GraphBase, copy_raw, degree_one_hot
from zoo.datamodules.base import stratified_split
from zoo.errors import ZooUserError

__all__ = ["GraphClassificationDataModule", "TUDataModule", "SyntheticGraphsDataModule", "generate_graph"]


class GraphClassificationDataModule(_GraphBase):
    """Base: ``load()`` returns a list of PyG ``Data`` graphs with a ``y`` label each.

    Args:
        batch_size: graphs per mini-batch.
        val_fraction / test_fraction: stratified, seeded shares held out for validation and test.
    """

    task = "graph"

    def __init__(self, data_dir: str | None = None, batch_size: int = 32, val_fraction: float = 0.1,
                 test_fraction: float = 0.1, num_workers: int = 0, seed: int = 42,
                 cache_dir: str | None = None) -> None:
        super().__init__(data_dir, batch_size, num_workers, seed, cache_dir)
        if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
            raise ZooUserError(f"val_fraction + test_fraction must be in (0, 1), got {val_fraction} + {test_fraction}")
        self.val_fraction, self.test_fraction = val_fraction, test_fraction

    @property
    def in_channels(self) -> int:
        return int(self.loaded[0].num_features)

    @property
    def num_classes(self) -> int:
        return int(max(int(g.y.max()) for g in self.loaded)) + 1

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        graphs = self.loaded
        y = torch.tensor([int(g.y.view(-1)[0]) for g in graphs])
        rest, test = stratified_split(y, self.test_fraction, self.seed)
        train, val = stratified_split(y[rest], self.val_fraction / (1 - self.test_fraction), self.seed)
        self.splits = {name: [graphs[i] for i in idx.tolist()]
                       for name, idx in (("train", rest[train]), ("val", rest[val]), ("test", test))}
        self.splits["predict"] = self.splits["test"]

    def _loader(self, split: str, train: bool = False) -> Any:
        from torch_geometric.loader import DataLoader

        self.setup()
        gen = torch.Generator().manual_seed(self.seed) if train else None
        return DataLoader(self.splits[split], batch_size=self.batch_size, shuffle=train, generator=gen,
                          num_workers=self.num_workers)


class TUDataModule(GraphClassificationDataModule):
    """A TU benchmark set (MUTAG, PROTEINS, NCI1, ...) from ``<data_dir>/TU/<name>/raw``, or downloaded.

    Args:
        name: the TU data set name (case-sensitive, e.g. ``MUTAG``).
        download: fetch it into ``cache_dir`` when it is not under ``data_dir`` (needs network).
        degree_features: for sets without node features, one-hot degrees up to this value (0: off).
    """

    def __init__(self, data_dir: str | None = None, name: str = "MUTAG", download: bool = False,
                 degree_features: int = 0, **kwargs: Any) -> None:
        super().__init__(data_dir, **kwargs)
        self.name, self.download, self.degree_features = name, download, degree_features

    def load(self) -> list[Any]:
        from torch_geometric.datasets import TUDataset

        root = self.cache_dir / "TU"
        names = [f"{self.name}_{part}.txt" for part in ("A", "graph_indicator", "graph_labels")]
        how = (f"put {self.name}_A.txt, {self.name}_graph_indicator.txt, {self.name}_graph_labels.txt (and the "
               f"optional {self.name}_node_labels.txt, ...) in <data-dir>/TU/{self.name}/raw, "
               "or add --data.download true when online")
        d = self.data_dir
        folders = [d / "TU" / self.name / "raw", d / self.name / "raw", d / self.name] if d is not None else []
        if self._local_raw(f"TU set {self.name}", folders, names, root / self.name / "raw", how):
            src = next(f for f in folders if (f / names[0]).is_file())
            optional = [p for p in src.glob(f"{self.name}_*.txt") if p.name not in names]
            copy_raw(optional, root / self.name / "raw")
        graphs = list(TUDataset(str(root), self.name))
        if graphs[0].x is None or graphs[0].num_features == 0:
            if self.degree_features <= 0:
                raise ZooUserError(f"TU set {self.name} has no node features; add --data.degree_features 10")
            for g in graphs:
                g.x = degree_one_hot(g.edge_index, g.num_nodes, self.degree_features)
        return graphs


def _erdos_renyi(n: int, p: float, gen: torch.Generator) -> torch.Tensor:
    return torch.rand(n, n, generator=gen) < p


def _two_communities(n: int, p_in: float, p_out: float, gen: torch.Generator) -> torch.Tensor:
    block = torch.arange(n) < n // 2
    same = block[:, None] == block[None, :]
    return torch.rand(n, n, generator=gen) < torch.where(same, p_in, p_out)


def _preferential(n: int, m: int, gen: torch.Generator) -> torch.Tensor:
    adj = torch.zeros(n, n, dtype=torch.bool)
    adj[: m + 1, : m + 1] = True  # a small clique to attach to
    for v in range(m + 1, n):
        deg = adj[:v, :v].sum(1).float()
        targets = torch.multinomial(deg, m, replacement=False, generator=gen)
        adj[v, targets] = True
    return adj


def generate_graph(label: int, n: int, gen: torch.Generator, max_degree: int = 10) -> Any:
    """One random graph of class ``label``: 0 Erdos-Renyi, 1 two communities, 2 preferential attachment.

    All three have a mean degree near 4, so a model has to read structure, not just size or density.
    """
    from torch_geometric.data import Data

    if label == 0:
        adj = _erdos_renyi(n, 4.0 / (n - 1), gen)
    elif label == 1:
        adj = _two_communities(n, 3.4 / (n / 2), 0.6 / (n / 2), gen)
    else:
        adj = _preferential(n, 2, gen)
    adj = torch.triu(adj, diagonal=1)
    adj = adj | adj.t()
    edge_index = adj.nonzero().t().contiguous()
    return Data(x=degree_one_hot(edge_index, n, max_degree), edge_index=edge_index, y=torch.tensor([label]),
                num_nodes=n)


class SyntheticGraphsDataModule(GraphClassificationDataModule):
    """Generated graph classification (offline): random, two-community and scale-free graphs, 3 classes.

    Graphs have one-hot degree features and come from a seeded generator.

    Args:
        num_graphs: graphs generated (split train/val/test like the TU sets).
        min_nodes / max_nodes: the node-count range of each graph.
        max_degree: one-hot degree features up to this degree.
    """

    def __init__(self, data_dir: str | None = None, num_graphs: int = 600, min_nodes: int = 12,
                 max_nodes: int = 30, max_degree: int = 10, **kwargs: Any) -> None:
        super().__init__(data_dir, **kwargs)
        if num_graphs < 30 or not 6 <= min_nodes <= max_nodes:
            raise ZooUserError(f"need num_graphs >= 30 and 6 <= min_nodes <= max_nodes, got {num_graphs}, "
                               f"{min_nodes}, {max_nodes}")
        self.num_graphs, self.min_nodes, self.max_nodes, self.max_degree = num_graphs, min_nodes, max_nodes, max_degree

    def load(self) -> list[Any]:
        gen = torch.Generator().manual_seed(self.seed)
        sizes = torch.randint(self.min_nodes, self.max_nodes + 1, (self.num_graphs,), generator=gen).tolist()
        return [generate_graph(i % 3, n, gen, self.max_degree) for i, n in enumerate(sizes)]
