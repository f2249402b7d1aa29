"""Graph neural networks on PyTorch Geometric: node classification, graph classification, link prediction.

Every architecture argument left at ``None`` takes the value from the paper of the chosen conv and
task (see :func:`zoo.models.gnn_tasks.paper_defaults`): GCN on Cora trains with Kipf & Welling's
2 x 16 recipe, ``--model.conv gat`` with Velickovic et al.'s 8 heads x 8 hidden, link prediction
with the GAE encoder and graph classification with GIN.

Example:
    >>> from zoo.models import GNN
    >>> model = GNN(in_channels=34, num_classes=4)            # GCN, node classification
    >>> model(torch.eye(34), torch.tensor([[0, 1], [1, 0]])).shape
    torch.Size([34, 4])
    >>> GNN(in_channels=7, num_classes=2, task="graph").hparams.conv
    'gin'
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
import torchmetrics

from zoo.artifacts import log_figure
from zoo.errors import ZooUserError
from zoo.models.base import OptimizerName, SchedulerName, ZooModule
from zoo.models.evaluation import write_class_predictions
from zoo.models.gnn_tasks import ConvName, GNNEncoder, GraphReadout, LinkDecoder, TaskName, paper_defaults

__all__ = ["GNN"]


class GNN(ZooModule):
    """GCN / GAT / GraphSAGE / GIN for node classification, graph classification and link prediction.

    Args:
        in_channels / num_classes / task: filled in from the DataModule by the CLI (``task`` is
            ``node``, ``graph`` or ``link``; pick it with the data, e.g. ``--data cora_link``).
        conv: ``gcn``, ``gat``, ``sage`` or ``gin`` (None: GCN, or GIN for graph classification).
        num_layers / hidden_channels / dropout: depth, width and dropout on every layer's input.
        out_channels: embedding size for link prediction (node classification outputs ``num_classes``).
        heads / out_heads: GAT attention heads in hidden / output layers (GAT only).
        act / norm / residual: ``relu``/``elu``, ``none``/``batch``/``layer``, additive skip connections.
        pool: graph readout ``mean``, ``sum`` or ``max``.
        decoder: link decoder ``dot`` or ``mlp``.
        optimizer / lr / weight_decay / scheduler: the optimisation recipe.
        decay_first_only: weight decay on the first layer only (GCN paper; default: GCN on its own data).
    """

    monitor, monitor_mode = "val/acc", "max"
    supports_multi_device = False  # full-batch training: the whole graph is one batch
    export_formats = ()
    default_patience = 100  # the GAT paper's patience; one validation per epoch
    trainer_defaults = {"max_epochs": 200, "log_every_n_steps": 1}  # one full-batch step per epoch

    def __init__(
        self,
        in_channels: int = 34,
        num_classes: int = 4,
        task: TaskName = "node",
        conv: ConvName | None = None,
        num_layers: int | None = None,
        hidden_channels: int | None = None,
        out_channels: int | None = None,
        heads: int | None = None,
        out_heads: int | None = None,
        dropout: float | None = None,
        act: Literal["relu", "elu"] | None = None,
        norm: Literal["none", "batch", "layer"] | None = None,
        residual: bool = False,
        pool: Literal["mean", "sum", "max"] | None = None,
        decoder: Literal["dot", "mlp"] = "dot",
        optimizer: OptimizerName = "adam",
        lr: float | None = None,
        weight_decay: float | None = None,
        decay_first_only: bool | None = None,
        scheduler: SchedulerName = "none",
    ) -> None:
        super().__init__()
        given = dict(conv=conv, num_layers=num_layers, hidden_channels=hidden_channels, out_channels=out_channels,
                     heads=heads, out_heads=out_heads, dropout=dropout, act=act, norm=norm, pool=pool, lr=lr,
                     weight_decay=weight_decay, decay_first_only=decay_first_only)
        hp = paper_defaults(task, conv)
        if hp["conv"] != "gat" and (heads is not None or out_heads is not None):
            raise ZooUserError(f"heads / out_heads apply to --model.conv gat only, not '{hp['conv']}'; drop them")
        hp.update({k: v for k, v in given.items() if v is not None})
        if task != "link" and out_channels is not None:
            raise ZooUserError("out_channels is the link-prediction embedding size; drop it for task " + task)
        if task != "link" and num_classes < 2:
            raise ZooUserError(f"num_classes must be >= 2, got {num_classes}")
        self.save_hyperparameters(dict(in_channels=in_channels, num_classes=num_classes, task=task, **hp,
                                       residual=residual, decoder=decoder, optimizer=optimizer, scheduler=scheduler))
        h = self.hparams
        heads_, out_heads_ = (h.heads or 1, h.out_heads or 1) if h.conv == "gat" else (1, 1)
        enc_out = {"node": num_classes, "link": h.out_channels, "graph": h.hidden_channels}[task]
        self.encoder = GNNEncoder(h.conv, in_channels, h.hidden_channels, enc_out, h.num_layers, h.dropout,
                                  heads_, out_heads_, h.act, h.norm, residual, last_act=task == "graph")
        self.readout = (GraphReadout(self.encoder.out_width, h.hidden_channels, num_classes, h.pool, h.dropout)
                        if task == "graph" else None)
        self.decoder = LinkDecoder(decoder, self.encoder.out_width) if task == "link" else None
        self._init_metrics()
        n = 4
        example = (torch.zeros(n, in_channels), torch.tensor([[0, 1, 2, 3], [1, 2, 3, 0]]))
        self.example_input_array = (*example, torch.zeros(n, dtype=torch.long)) if task == "graph" else example

    def _init_metrics(self) -> None:
        task = self.hparams.task
        if task == "link":
            self.monitor = "val/auc"  # instance override of the class default val/acc (also logged)
        if task == "node" and self.hparams.conv == "gat":
            # Velickovic et al.: early stopping on the validation loss (patience 100) with a long budget;
            # selecting on the noisier val accuracy over 200 epochs costs ~1 point on Cora
            self.monitor, self.monitor_mode = "val/loss", "min"
            self.trainer_defaults = {**type(self).trainer_defaults, "max_epochs": 1000}
        for stage in ("train", "val", "test"):
            if task == "link":
                setattr(self, f"{stage}_auc", torchmetrics.AUROC(task="binary"))
                setattr(self, f"{stage}_ap", torchmetrics.AveragePrecision(task="binary"))
                setattr(self, f"{stage}_acc", torchmetrics.Accuracy(task="binary"))
            else:
                setattr(self, f"{stage}_acc", torchmetrics.Accuracy(task="multiclass",
                                                                   num_classes=self.hparams.num_classes))

    def setup(self, stage: str) -> None:
        trainer = getattr(self, "_trainer", None)
        if trainer is not None and trainer.world_size > 1:
            raise ZooUserError(f"GNN trains on the whole graph on one device, got {trainer.world_size} devices; "
                               "use --gpus 1")

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, batch: torch.Tensor | None = None) -> torch.Tensor:
        """Node logits (node task), node embeddings (link task) or graph logits (graph task)."""
        h = self.encoder(x, edge_index)
        return self.readout(h, batch) if self.readout is not None else h

    def param_groups(self) -> list[Any]:
        params = [p for p in self.parameters() if p.requires_grad]
        if not self.hparams.decay_first_only:
            return params
        first = ({id(p) for p in self.encoder.convs[0].parameters()}
                 | {id(p) for p in self.encoder.skips[0].parameters()})
        return [{"params": [p for p in params if id(p) in first]},
                {"params": [p for p in params if id(p) not in first], "weight_decay": 0.0}]

    # ---- steps ---------------------------------------------------------------------------------
    def _targets(self, batch: Any, out: torch.Tensor, stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, labels) of the nodes / graphs that count for ``stage``."""
        if self.hparams.task == "graph":
            return out, batch.y.view(-1)
        if "batch_size" in batch:  # NeighborLoader mini-batch: the seed nodes come first
            return out[: batch.batch_size], batch.y[: batch.batch_size]
        mask = batch[f"{stage}_mask"]
        return out[mask], batch.y[mask]

    def _link_scores(self, batch: Any, stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        z = self(batch.x, batch.edge_index)
        pos = batch.pos_edge_label_index
        if stage == "train":  # fresh negatives every epoch, never an edge of the message-passing graph
            from torch_geometric.utils import negative_sampling

            neg = negative_sampling(batch.edge_index, num_nodes=batch.num_nodes, num_neg_samples=pos.size(1))
        else:
            neg = batch.neg_edge_label_index
        logits = self.decoder(z, torch.cat([pos, neg], dim=1))
        labels = torch.cat([torch.ones(pos.size(1)), torch.zeros(neg.size(1))]).to(logits)
        return logits, labels

    def _step(self, batch: Any, stage: str) -> torch.Tensor:
        on_bar = stage != "train"
        if self.hparams.task == "link":
            logits, labels = self._link_scores(batch, stage)
            loss = F.binary_cross_entropy_with_logits(logits, labels)
            for name in ("auc", "ap", "acc"):
                metric = getattr(self, f"{stage}_{name}")
                metric(logits.sigmoid(), labels.long())
                self.log(f"{stage}/{name}", metric, on_step=False, on_epoch=True, prog_bar=on_bar and name == "auc")
        else:
            out = self(batch.x, batch.edge_index, batch.batch if self.hparams.task == "graph" else None)
            logits, labels = self._targets(batch, out, stage)
            loss = F.cross_entropy(logits, labels)
            metric = getattr(self, f"{stage}_acc")
            metric(logits.argmax(-1), labels)
            self.log(f"{stage}/acc", metric, on_step=False, on_epoch=True, prog_bar=on_bar)
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=labels.numel())
        return loss

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "test")
        if batch_idx == 0 and self.hparams.task != "graph" and self.trainer.is_global_zero:
            from zoo.models.plots import plot_embedding

            keep = batch.get("test_mask") if self.hparams.task == "node" else None  # the nodes scored at test
            h = self.encoder(batch.x, batch.edge_index)
            y = batch.y if batch.get("y") is not None and batch.y.dim() == 1 else None
            h, y = (h[keep], y[keep] if y is not None else None) if keep is not None else (h, y)
            log_figure(self.trainer, "embeddings", plot_embedding(h, y, f"{self.hparams.conv} node outputs, test"))

    # ---- predictions ---------------------------------------------------------------------------
    def predict_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        """Class probabilities per node / graph, or edge probabilities of the test edges (link task)."""
        task = self.hparams.task
        if task == "link":
            z = self(batch.x, batch.edge_index)
            idx = torch.cat([batch.pos_edge_label_index, batch.neg_edge_label_index], dim=1)
            return {"source": idx[0], "target": idx[1], "prob": self.decoder(z, idx).sigmoid()}
        probs = self(batch.x, batch.edge_index, batch.batch if task == "graph" else None).softmax(-1)
        if task == "graph":  # graphs are numbered in loader order by write_predictions
            return {"probs": probs}
        if "batch_size" in batch:
            return {"id": batch.n_id[: batch.batch_size], "probs": probs[: batch.batch_size]}
        return {"id": torch.arange(probs.size(0)), "probs": probs}

    def write_predictions(self, predictions: list[Any], out_dir: Path, datamodule: Any) -> Path:
        """Nodes / graphs: the class-probabilities schema (input = node or graph id, prediction, p_<class>...);
        links: one row per scored edge (source, target, prob)."""
        path = out_dir / "predictions.csv"
        if self.hparams.task != "link":
            probs = torch.cat([p["probs"] for p in predictions])
            ids = [i for p in predictions for i in p["id"].tolist()] if all("id" in p for p in predictions) \
                else list(range(len(probs)))
            return write_class_predictions(path, ids, probs, [str(c) for c in range(probs.shape[1])])
        out_dir.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["source", "target", "prob"])
            for p in predictions:
                writer.writerows(zip(p["source"].tolist(), p["target"].tolist(), p["prob"].tolist()))
        return path
