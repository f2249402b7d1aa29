"""GNN benchmark: Cora public split (GCN, GAT) over seeds vs a plain PyG loop, and Cora link prediction.

Zoo runs use a CLI-like Trainer (the model's monitored metric and epoch budget: GCN val/acc over
200 epochs, GAT val/loss over up to 1000; EarlyStopping patience 100, CSV logger, no progress bar) and
test the best checkpoint; the plain loop trains the same network with the same budget and selection
(evaluating every epoch; test accuracy at the best validation accuracy, or for GAT at the lowest
validation loss with the same patience).
Raw files are read from ``--data-dir`` (never written); PyG processes a copy in a temporary cache.

Usage:
    nice python benchmarks/bench_gnn.py --data-dir ../shared/data --seeds 10 --models gcn gat
    nice python benchmarks/bench_gnn.py --models none --link-seeds 3
"""
from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F

from zoo.datamodules.graphs import PLANETOID_PARTS, PlanetoidDataModule, cache_root
from zoo.models.gnn import GNN
from zoo.registry import create_datamodule, get_datamodule_class

REPO = Path(__file__).resolve().parents[1]


def zoo_run(dm: PlanetoidDataModule, seed: int, epochs: int | None, root: Path, **hp) -> tuple[dict, float]:
    """Fit + test the best checkpoint the way the CLI does; (test metrics, wall seconds)."""
    L.seed_everything(seed, verbose=False)
    model = GNN(in_channels=dm.in_channels, num_classes=dm.num_classes, task=dm.task, **hp)
    epochs = epochs or model.trainer_defaults["max_epochs"]
    mon, mode = model.monitor, model.monitor_mode
    cbs = [L.pytorch.callbacks.ModelCheckpoint(dirpath=root / f"ckpt{seed}", monitor=mon, mode=mode),
           L.pytorch.callbacks.EarlyStopping(monitor=mon, mode=mode, patience=model.default_patience)]
    trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=epochs, callbacks=cbs, enable_progress_bar=False,
                        enable_model_summary=False, logger=L.pytorch.loggers.CSVLogger(root), default_root_dir=root,
                        log_every_n_steps=1)
    start = time.perf_counter()
    trainer.fit(model, dm)
    result = trainer.test(model, dm, ckpt_path="best", verbose=False)[0]
    return result, time.perf_counter() - start


class PlainNet(torch.nn.Module):
    """The two-layer GCN / GAT of the PyG examples (same sizes as the zoo defaults)."""

    def __init__(self, conv: str, c_in: int, n_cls: int) -> None:
        super().__init__()
        from torch_geometric.nn import GATConv, GCNConv

        if conv == "gcn":
            self.c1, self.c2, self.p, self.act = GCNConv(c_in, 16), GCNConv(16, n_cls), 0.5, F.relu
        else:
            self.c1 = GATConv(c_in, 8, heads=8, dropout=0.6)
            self.c2, self.p, self.act = GATConv(64, n_cls, heads=1, concat=False, dropout=0.6), 0.6, F.elu

    def forward(self, x: torch.Tensor, ei: torch.Tensor) -> torch.Tensor:
        x = self.act(self.c1(F.dropout(x, self.p, self.training), ei))
        return self.c2(F.dropout(x, self.p, self.training), ei)


def plain_run(data, conv: str, seed: int, epochs: int | None) -> tuple[float, float]:
    """(test accuracy at the best validation accuracy (GCN) or lowest validation loss (GAT, patience 100),
    wall seconds)."""
    torch.manual_seed(seed)
    model = PlainNet(conv, data.num_features, int(data.y.max()) + 1)
    if conv == "gcn":  # weight decay on the first layer only, as in the paper and PyG's example
        groups = [dict(params=model.c1.parameters(), weight_decay=5e-4), dict(params=model.c2.parameters())]
        opt = torch.optim.Adam(groups, lr=0.01)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=0.005, weight_decay=5e-4)
    by_loss = conv == "gat"
    epochs = epochs or (1000 if by_loss else 200)
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
            if since_best >= 100:
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
    p.add_argument("--epochs", type=int, default=None, help="epoch budget (default: the model's, GCN 200, GAT 1000)")
    p.add_argument("--link-seeds", type=int, default=3)
    p.add_argument("--link-epochs", type=int, default=400)
    p.add_argument("--datasets", nargs="+", default=["cora", "citeseer", "pubmed"])
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on 2 shared cores)")
    args = p.parse_args()
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
        dm = create_datamodule(name, data_dir=args.data_dir, cache_dir=cache)
        data = dm.loaded
        for conv in [c for c in args.models if c != "none"]:
            accs, zoo_t, plain_accs, plain_t = [], [], [], []
            n_plain = args.plain_seeds if args.plain_seeds is not None else args.seeds
            for seed in range(args.seeds):  # zoo and plain interleaved: same machine load for both
                res, secs = zoo_run(dm, seed, args.epochs, tmp / f"{name}_{conv}", conv=conv)
                accs.append(res["test/acc"])
                zoo_t.append(secs)
                print(f"  {name} {conv} seed {seed}: zoo test acc {res['test/acc']:.3f} ({secs:.1f} s)", flush=True)
                if seed < n_plain:
                    acc, secs = plain_run(data, conv, seed, args.epochs)
                    plain_accs.append(acc)
                    plain_t.append(secs)
                    print(f"  {name} {conv} seed {seed}: plain test acc {acc:.3f} ({secs:.1f} s)", flush=True)
            n = len(plain_t)  # time ratio over the seeds run by both
            zt, pt = statistics.mean(zoo_t[:n] or zoo_t), statistics.mean(plain_t) if plain_t else float("nan")
            print(f"RESULT {name} {conv}: zoo test acc {fmt(accs)} % ({len(accs)} seeds), plain PyG loop "
                  f"{fmt(plain_accs) if plain_accs else '-'} % ({len(plain_accs)} seeds); time per seed zoo {zt:.1f} s, "
                  f"plain {pt:.1f} s, ratio {zt / pt:.2f}x", flush=True)
        if args.link_seeds > 0:
            link = create_datamodule(f"{name}_link", data_dir=args.data_dir, cache_dir=cache)
            aucs, aps, times = [], [], []
            for seed in range(args.link_seeds):
                res, secs = zoo_run(link, seed, args.link_epochs, tmp / f"{name}_link")
                aucs.append(res["test/auc"])
                aps.append(res["test/ap"])
                times.append(secs)
                print(f"  {name}_link seed {seed}: test AUC {res['test/auc']:.3f} AP {res['test/ap']:.3f} "
                      f"({secs:.1f} s)", flush=True)
            print(f"RESULT {name}_link gcn (GAE): test AUC {fmt(aucs)} %, AP {fmt(aps)} % ({len(aucs)} seeds, "
                  f"{args.link_epochs} epochs, {statistics.mean(times):.1f} s per seed)", flush=True)


if __name__ == "__main__":
    main()
