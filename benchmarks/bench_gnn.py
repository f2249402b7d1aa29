"""GNN benchmark: Cora public split (GCN, GAT) over seeds vs a plain PyG loop, and Cora link prediction.

Node classification reads one recipe per conv, ``recipes/gnn_gcn_cora.yaml`` and ``recipes/gnn_gat_cora.yaml``
(the README rows; ``python train.py -c <recipe> --data-dir ../shared/data`` trains one seed of them): the zoo
model, DataModule options, epoch budget and first seed come from the recipe, and the plain PyG loop is built
from the same values (widths, heads, dropout, activation, Adam lr / weight decay, first-layer-only decay).
Zoo runs use a CLI-like Trainer (the model's monitored metric: GCN val/acc over 200 epochs, GAT val/loss over
up to 1000; EarlyStopping with the model's patience, 100; CSV logger, no progress bar) and test the best
checkpoint; the plain loop trains the same network with the same budget and selection (evaluating every epoch;
test accuracy at the best validation accuracy, or for GAT at the lowest validation loss with the same patience).
Seeds run from the recipe's ``seed_everything`` (0) upwards.
Raw files are read from ``--data-dir`` (never written); PyG processes a copy in a temporary cache.

Usage:
    nice python benchmarks/bench_gnn.py --data-dir ../shared/data --seeds 10 --models gcn gat
    nice python benchmarks/bench_gnn.py --models none --link-seeds 3

Link prediction (GAE on ``<name>_link``) reads ``recipes/gnn_gae_cora_link.yaml`` (``--link-recipe``): the model
and data options, the epoch budget and the first seed.
"""
from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
import warnings
from pathlib import Path

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F

from zoo.datamodules.graphs import PLANETOID_PARTS, PlanetoidDataModule, cache_root
from zoo.models.gnn import GNN
from zoo.models.gnn_tasks import paper_defaults
from zoo.registry import create_datamodule, get_datamodule_class

from _recipes import load_recipe, recipe_path

REPO = Path(__file__).resolve().parents[1]
RECIPES = {"gcn": recipe_path("gnn_gcn_cora"), "gat": recipe_path("gnn_gat_cora")}


def plain_hparams(cfg: dict[str, Any]) -> dict[str, Any]:
    """The recipe's model section with every value it leaves out filled in as the zoo's GNN does."""
    model = cfg["model"]
    return {**paper_defaults("node", model.get("conv")), **{k: v for k, v in model.items() if v is not None}}


def zoo_run(dm: PlanetoidDataModule, seed: int, epochs: int | None, root: Path, log_every_n_steps: int = 1,
            **hp) -> tuple[dict, float]:
    """Fit + test the best checkpoint the way the CLI does; (test metrics, wall seconds)."""
    L.seed_everything(seed, verbose=False)
    model = GNN(in_channels=dm.in_channels, num_classes=dm.num_classes, task=dm.task, **hp)
    epochs = epochs or model.trainer_defaults["max_epochs"]
    mon, mode = model.monitor, model.monitor_mode
    cbs = [L.pytorch.callbacks.ModelCheckpoint(dirpath=root / f"ckpt{seed}", monitor=mon, mode=mode),
           L.pytorch.callbacks.EarlyStopping(monitor=mon, mode=mode, patience=model.default_patience)]
    trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=epochs, callbacks=cbs, enable_progress_bar=False,
                        enable_model_summary=False, logger=L.pytorch.loggers.CSVLogger(root), default_root_dir=root,
                        log_every_n_steps=log_every_n_steps)
    start = time.perf_counter()
    trainer.fit(model, dm)
    result = trainer.test(model, dm, ckpt_path="best", verbose=False)[0]
    return result, time.perf_counter() - start


class PlainNet(torch.nn.Module):
    """The two-layer GCN / GAT of the PyG examples, sized by the recipe's hyper-parameters ``hp``."""

    def __init__(self, hp: dict[str, Any], c_in: int, n_cls: int) -> None:
        super().__init__()
        from torch_geometric.nn import GATConv, GCNConv

        unsupported = {k: hp[k] for k, ok in (("conv", ("gcn", "gat")), ("num_layers", (2,)), ("norm", ("none",)),
                                              ("residual", (False,)), ("scheduler", ("none",)),
                                              ("optimizer", ("adam",))) if hp.get(k, ok[0]) not in ok}
        if unsupported:
            raise SystemExit(f"the plain loop builds 2-layer GCN / GAT trained with Adam only, not {unsupported}")
        width, self.p, self.act = hp["hidden_channels"], hp["dropout"], F.elu if hp["act"] == "elu" else F.relu
        if hp["conv"] == "gcn":
            self.c1, self.c2 = GCNConv(c_in, width), GCNConv(width, n_cls)
        else:
            heads = hp["heads"]
            self.c1 = GATConv(c_in, width, heads=heads, dropout=self.p)
            self.c2 = GATConv(width * heads, n_cls, heads=hp["out_heads"], concat=False, dropout=self.p)

    def forward(self, x: torch.Tensor, ei: torch.Tensor) -> torch.Tensor:
        x = self.act(self.c1(F.dropout(x, self.p, self.training), ei))
        return self.c2(F.dropout(x, self.p, self.training), ei)


def plain_run(data, hp: dict[str, Any], seed: int, epochs: int) -> tuple[float, float]:
    """(test accuracy at the best validation accuracy (GCN) or lowest validation loss (GAT, the zoo model's
    selection and patience, 100), wall seconds)."""
    torch.manual_seed(seed)
    model = PlainNet(hp, data.num_features, int(data.y.max()) + 1)
    if hp["decay_first_only"]:  # weight decay on the first layer only, as in the GCN paper and PyG's example
        groups = [dict(params=model.c1.parameters(), weight_decay=hp["weight_decay"]),
                  dict(params=model.c2.parameters())]
        opt = torch.optim.Adam(groups, lr=hp["lr"])
    else:
        opt = torch.optim.Adam(model.parameters(), lr=hp["lr"], weight_decay=hp["weight_decay"])
    by_loss = hp["conv"] == "gat"  # as GNN._init_metrics: val/loss selection for GAT node classification
    best_val, test_at_best, since_best = -float("inf"), 0.0, 0
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        opt.zero_grad()
        F.cross_entropy(model(data.x, data.edge_index)[data.train_mask], data.y[data.train_mask]).backward()
        opt.step()
        model.eval()
        with torch.no_grad():
            logits = model(data.x, data.edge_index)
        pred = logits.argmax(-1)
        val, test = [(pred[m] == data.y[m]).float().mean().item() for m in (data.val_mask, data.test_mask)]
        if by_loss:
            val = -F.cross_entropy(logits[data.val_mask], data.y[data.val_mask]).item()
        if val > best_val:
            best_val, test_at_best, since_best = val, test, 0
        else:
            since_best += 1
            if since_best >= GNN.default_patience:
                break
    return test_at_best, time.perf_counter() - start


def fmt(xs: list[float], scale: float = 100.0) -> str:
    sd = statistics.stdev(xs) * scale if len(xs) > 1 else 0.0
    return f"{statistics.mean(xs) * scale:.1f} ± {sd:.1f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    p.add_argument("--models", nargs="+", default=["gcn", "gat"], help="convs for node classification (none: skip)")
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--plain-seeds", type=int, default=None, help="seeds for the plain loop (default --seeds)")
    p.add_argument("--epochs", type=int, default=None,
                   help="epoch budget (default: the recipe's trainer.max_epochs, GCN 200, GAT 1000)")
    p.add_argument("--gcn-recipe", type=Path, default=RECIPES["gcn"], help="recipe of --models gcn")
    p.add_argument("--gat-recipe", type=Path, default=RECIPES["gat"], help="recipe of --models gat")
    p.add_argument("--link-recipe", type=Path, default=recipe_path("gnn_gae_cora_link"), help="the link part's recipe")
    p.add_argument("--link-seeds", type=int, default=3)
    p.add_argument("--link-epochs", type=int, default=None, help="default: the link recipe's max_epochs, 400")
    p.add_argument("--datasets", nargs="+", default=["cora", "citeseer", "pubmed"])
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on 2 shared cores)")
    args = p.parse_args()
    convs = [c for c in args.models if c != "none"]
    unknown = [c for c in convs if c not in RECIPES]
    if unknown:
        raise SystemExit(f"--models: no recipe for {unknown}; choose from gcn, gat (or none)")
    recipes = {conv: load_recipe(getattr(args, f"{conv}_recipe")) for conv in convs}
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    tmp = Path(tempfile.mkdtemp(prefix="bench_gnn_"))
    cache = str(tmp / "cache")
    print(f"data dir {args.data_dir}; cache {cache} (default cache would be {cache_root()}); threads {args.threads}")
    for name in args.datasets:
        folder = Path(args.data_dir) / "planetoid" / get_datamodule_class(name).dataset_name / "raw"
        if not all((folder / f"ind.{name}.{part}").is_file() for part in PLANETOID_PARTS):
            print(f"{name}: raw Planetoid files not found in {folder}; skipped")
            continue
        for conv in convs:
            cfg = recipes[conv]  # the recipe's data options apply to every --datasets graph
            dm = create_datamodule(name, data_dir=args.data_dir, cache_dir=cache, **cfg["data"])
            data = dm.loaded
            hp, epochs = plain_hparams(cfg), args.epochs or cfg["trainer"].get("max_epochs")
            epochs = epochs or (1000 if hp["conv"] == "gat" else 200)  # the model's budget when the recipe has none
            log_every = cfg["trainer"].get("log_every_n_steps", 1)
            accs, zoo_t, plain_accs, plain_t = [], [], [], []
            n_plain = args.plain_seeds if args.plain_seeds is not None else args.seeds
            first = cfg["seed_everything"]
            for seed in range(first, first + args.seeds):  # zoo and plain interleaved: same machine load for both
                res, secs = zoo_run(dm, seed, epochs, tmp / f"{name}_{conv}", log_every, **cfg["model"])
                accs.append(res["test/acc"])
                zoo_t.append(secs)
                print(f"  {name} {conv} seed {seed}: zoo test acc {res['test/acc']:.3f} ({secs:.1f} s)", flush=True)
                if seed - first < n_plain:
                    acc, secs = plain_run(data, hp, seed, epochs)
                    plain_accs.append(acc)
                    plain_t.append(secs)
                    print(f"  {name} {conv} seed {seed}: plain test acc {acc:.3f} ({secs:.1f} s)", flush=True)
            n = len(plain_t)  # time ratio over the seeds run by both
            zt, pt = statistics.mean(zoo_t[:n] or zoo_t), statistics.mean(plain_t) if plain_t else float("nan")
            print(f"RESULT {name} {conv}: zoo test acc {fmt(accs)} % ({len(accs)} seeds), plain PyG loop "
                  f"{fmt(plain_accs) if plain_accs else '-'} % ({len(plain_accs)} seeds); "
                  f"time per seed zoo {zt:.1f} s, "
                  f"plain {pt:.1f} s, ratio {zt / pt:.2f}x", flush=True)
        if args.link_seeds > 0:
            cfg = load_recipe(args.link_recipe, model="gnn")  # its data options apply to every --datasets graph
            link = create_datamodule(f"{name}_link", data_dir=args.data_dir, cache_dir=cache, **cfg["data"])
            epochs = args.link_epochs or cfg["trainer"].get("max_epochs", 400)
            aucs, aps, times = [], [], []
            first = cfg["seed_everything"]
            for seed in range(first, first + args.link_seeds):
                res, secs = zoo_run(link, seed, epochs, tmp / f"{name}_link",
                                    cfg["trainer"].get("log_every_n_steps", 1), **cfg["model"])
                aucs.append(res["test/auc"])
                aps.append(res["test/ap"])
                times.append(secs)
                print(f"  {name}_link seed {seed}: test AUC {res['test/auc']:.3f} AP {res['test/ap']:.3f} "
                      f"({secs:.1f} s)", flush=True)
            print(f"RESULT {name}_link gcn (GAE): test AUC {fmt(aucs)} %, AP {fmt(aps)} % ({len(aucs)} seeds, "
                  f"{epochs} epochs, {statistics.mean(times):.1f} s per seed)", flush=True)


if __name__ == "__main__":
    main()
