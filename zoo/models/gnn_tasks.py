"""Building blocks of the ``gnn`` model: paper defaults, conv factory, encoder, readout and decoders.

torch_geometric is imported inside the functions that build layers, so importing this module
(and listing models) stays fast.

Example:
    >>> paper_defaults("node", "gcn")["hidden_channels"]
    16
    >>> enc = GNNEncoder("gcn", in_channels=34, hidden_channels=16, out_channels=4, num_layers=2)
    >>> enc(torch.eye(34), torch.tensor([[0, 1], [1, 0]])).shape
    torch.Size([34, 4])
"""
from __future__ import annotations

import difflib
from typing import Any, Literal

import torch
from torch import nn

from zoo.errors import ZooUserError

__all__ = ["CONV_TYPES", "TASKS", "paper_defaults", "make_conv", "GNNEncoder", "LinkDecoder", "GraphReadout"]

ConvName = Literal["gcn", "gat", "sage", "gin"]
TaskName = Literal["node", "graph", "link"]
CONV_TYPES: tuple[str, ...] = ("gcn", "gat", "sage", "gin")
TASKS: tuple[str, ...] = ("node", "graph", "link")

_COMMON = dict(heads=None, out_heads=None, act="relu", pool="mean", decay_first_only=False)
# Paper settings, looked up for every constructor argument left at None.
_NODE = {
    # Kipf & Welling 2017: 2 layers, 16 hidden, dropout 0.5, lr 0.01, L2 5e-4 on the first layer only.
    "gcn": dict(num_layers=2, hidden_channels=16, dropout=0.5, lr=0.01, weight_decay=5e-4, decay_first_only=True),
    # Velickovic et al. 2018: 8 heads x 8 hidden, ELU, 1 output head, dropout 0.6 (inputs + attention), lr 0.005.
    "gat": dict(num_layers=2, hidden_channels=8, heads=8, out_heads=1, act="elu", dropout=0.6, lr=0.005,
                weight_decay=5e-4),
    # GraphSAGE-mean / GIN have no Planetoid table: the GCN recipe with a wider hidden layer.
    "sage": dict(num_layers=2, hidden_channels=64, dropout=0.5, lr=0.01, weight_decay=5e-4),
    "gin": dict(num_layers=2, hidden_channels=64, dropout=0.5, lr=0.01, weight_decay=5e-4),
}
# Kipf & Welling 2016 (GAE): GCN encoder 32 -> 16, no dropout, lr 0.01, inner-product decoder.
_LINK = dict(num_layers=2, hidden_channels=32, out_channels=16, dropout=0.0, lr=0.01, weight_decay=0.0)
# Xu et al. 2019 (GIN): 5 layers, 64 hidden, batch norm, sum readout, dropout 0.5 before the classifier.
_GRAPH = dict(num_layers=5, hidden_channels=64, dropout=0.5, lr=0.01, weight_decay=0.0, pool="sum", norm="batch")


def _check_choice(value: str, choices: tuple[str, ...], what: str, flag: str) -> None:
    if value not in choices:
        close = difflib.get_close_matches(value, choices, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise ZooUserError(f"unknown {what} '{value}'; {hint}choose {flag} {'|'.join(choices)}")


def paper_defaults(task: str, conv: str | None) -> dict[str, Any]:
    """The published hyper-parameters for ``task`` (node, graph, link) and ``conv`` (None: the paper's conv)."""
    _check_choice(task, TASKS, "task", "--model.task")
    conv = conv or ("gin" if task == "graph" else "gcn")
    _check_choice(conv, CONV_TYPES, "conv type", "--model.conv")
    table = _NODE[conv] if task == "node" else (_LINK if task == "link" else _GRAPH)
    out = {**_COMMON, "conv": conv, "out_channels": None, "norm": "none", **table}
    if conv == "gat" and task != "node":  # GAT's heads outside node classification: keep the paper's 8 x 8
        out.update(heads=8, out_heads=1, hidden_channels=8, act="elu")
    return out


def make_conv(conv: str, c_in: int, c_out: int, heads: int = 1, concat: bool = True, dropout: float = 0.0,
              mlp_hidden: int | None = None) -> nn.Module:
    """One PyG message-passing layer; GAT outputs ``heads * c_out`` features when ``concat``; GIN's MLP
    is ``c_in -> mlp_hidden -> c_out`` (``mlp_hidden`` defaults to ``c_out``)."""
    import torch_geometric.nn as gnn

    if conv == "gcn":
        return gnn.GCNConv(c_in, c_out, cached=False)
    if conv == "gat":
        return gnn.GATConv(c_in, c_out, heads=heads, concat=concat, dropout=dropout)
    if conv == "sage":
        return gnn.SAGEConv(c_in, c_out, aggr="mean")
    if conv == "gin":
        width = max(mlp_hidden or c_out, c_out)
        mlp = nn.Sequential(nn.Linear(c_in, width), nn.BatchNorm1d(width), nn.ReLU(), nn.Linear(width, c_out))
        return gnn.GINConv(mlp, train_eps=True)
    _check_choice(conv, CONV_TYPES, "conv type", "--model.conv")
    raise AssertionError("unreachable")


class GNNEncoder(nn.Module):
    """``num_layers`` convs with dropout on every layer's input, activation / norm / residual between layers.

    The last layer outputs ``out_channels`` (class logits for node classification, embeddings
    otherwise) and has no activation when ``last_act`` is False. Ours, not PyG's ``BasicGNN``: that drops out
    only hidden activations, never the input features (Kipf & Welling's and Veličković et al.'s Cora recipes drop
    both), and gives GAT's output layer the hidden layers' head count (GAT averages its own ``out_heads``).
    """

    def __init__(self, conv: str, in_channels: int, hidden_channels: int, out_channels: int, num_layers: int,
                 dropout: float = 0.0, heads: int = 1, out_heads: int = 1, act: str = "relu", norm: str = "none",
                 residual: bool = False, last_act: bool = False) -> None:
        super().__init__()
        if num_layers < 1:
            raise ZooUserError(f"num_layers must be >= 1, got {num_layers}")
        _check_choice(norm, ("none", "batch", "layer"), "norm", "--model.norm")
        _check_choice(act, ("relu", "elu"), "activation", "--model.act")
        self.dropout, self.residual, self.last_act = dropout, residual, last_act
        self.act = nn.ELU() if act == "elu" else nn.ReLU()
        self.convs, self.norms, self.skips = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        c_in = in_channels
        for i in range(num_layers):
            last = i == num_layers - 1
            c_out, h = (out_channels, out_heads) if last else (hidden_channels, heads)
            concat = not last  # GAT: hidden heads are concatenated, output heads averaged
            self.convs.append(make_conv(conv, c_in, c_out, h, concat, dropout, hidden_channels))
            width = c_out * h if (conv == "gat" and concat) else c_out
            self.norms.append(nn.Identity() if (last and not last_act) or norm == "none" else
                              nn.BatchNorm1d(width) if norm == "batch" else nn.LayerNorm(width))
            self.skips.append(nn.Linear(c_in, width, bias=False) if residual and c_in != width else nn.Identity())
            c_in = width
        self.out_width = c_in

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        for i, (conv, norm, skip) in enumerate(zip(self.convs, self.norms, self.skips)):
            x_in = nn.functional.dropout(x, self.dropout, self.training)
            h = conv(x_in, edge_index)
            if self.residual:
                h = h + skip(x_in)
            if i < len(self.convs) - 1 or self.last_act:
                h = self.act(norm(h))
            x = h
        return x


class GraphReadout(nn.Module):
    """Global pooling (mean, sum or max) then a two-layer classifier with dropout."""

    def __init__(self, in_channels: int, hidden: int, num_classes: int, pool: str, dropout: float) -> None:
        super().__init__()
        _check_choice(pool, ("mean", "sum", "max"), "pool", "--model.pool")
        self.pool = pool
        self.head = nn.Sequential(nn.Linear(in_channels, hidden), nn.ReLU(), nn.Dropout(dropout),
                                  nn.Linear(hidden, num_classes))

    def forward(self, h: torch.Tensor, batch: torch.Tensor | None) -> torch.Tensor:
        import torch_geometric.nn as gnn

        fn = {"mean": gnn.global_mean_pool, "sum": gnn.global_add_pool, "max": gnn.global_max_pool}[self.pool]
        return self.head(fn(h, batch))


class LinkDecoder(nn.Module):
    """Edge logits from node embeddings: inner product (GAE) or an MLP on the Hadamard product."""

    def __init__(self, kind: str, channels: int) -> None:
        super().__init__()
        _check_choice(kind, ("dot", "mlp"), "decoder", "--model.decoder")
        self.kind = kind
        self.mlp = (nn.Sequential(nn.Linear(channels, channels), nn.ReLU(), nn.Linear(channels, 1))
                    if kind == "mlp" else None)

    def forward(self, z: torch.Tensor, edge_label_index: torch.Tensor) -> torch.Tensor:
        prod = z[edge_label_index[0]] * z[edge_label_index[1]]
        return prod.sum(-1) if self.mlp is None else self.mlp(prod).squeeze(-1)
