"""GPT on Tiny Shakespeare (characters) at nanoGPT's CPU "baby GPT" budget, and the zoo's training throughput
against a plain PyTorch loop over the same model, optimiser, schedule and batches.

Both read ``recipes/gpt_tinyshakespeare.yaml`` (4 layers, 4 heads, 128 dims, block 64, batch 12, 2000 steps
= 1.536 M training tokens), so users, the zoo run and the plain loop train the same configuration.

``--part quality``: the recipe through ``train.py`` (checkpoints, early stopping, CSV logging, samples), then
the same recipe in the plain loop; prints validation / test loss (nats per character) beside nanoGPT's
published 1.88, the wall time and a generated sample. Both train on the first 90 % of the text, as nanoGPT
does; nanoGPT validates on the last 10 %, the recipe splits it into validation (90-95 %) and test (95-100 %),
so the token-weighted mean of the two (``val+test``) is the loss on nanoGPT's validation split.

``--part throughput``: ``--steps`` training steps (validation and samples included, as configured), the
plain loop and the zoo alternating (plain, zoo, zoo, plain, ...) after an untimed warm-up of each; prints
tokens/s of both and the zoo / plain ratio (per repetition and of the means) with ``/proc/loadavg``.

    python benchmarks/bench_gpt.py --data-dir ../shared/data --part quality --threads 2
    python benchmarks/bench_gpt.py --data-dir ../shared/data --part throughput --steps 500 --reps 2 --threads 2
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F

from zoo.cli import main as zoo_main
from zoo.datamodules.language import LanguageDataModule, RandomBlockLoader
from zoo.models.gpt import GPT, warmup_cosine

from _recipes import load_recipe, recipe_path

REPO = Path(__file__).resolve().parents[1]
RECIPE = recipe_path("gpt_tinyshakespeare")
NANOGPT_VAL_LOSS = 1.88  # nanoGPT README, baby GPT on CPU, same budget


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().split(" tid")[0].strip()


def plain_loop(cfg: dict[str, Any], data_dir: str, steps: int) -> dict[str, float]:
    """The recipe in plain PyTorch: same DataModule batches, model, AdamW groups, schedule, clipping,
    validation at every epoch end and samples at the same steps."""
    L.seed_everything(cfg.get("seed_everything", 42), verbose=False)
    dm = LanguageDataModule(data_dir=data_dir, **cfg["data"])
    dm.setup()
    model = GPT(vocab_size=dm.vocab_size, block_size=dm.block_size, **cfg["model"])
    hp, clip = model.hparams, cfg["trainer"].get("gradient_clip_val", 1.0)
    opt = torch.optim.AdamW(model.param_groups(), lr=hp.lr, betas=tuple(hp.betas))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, hp.warmup_steps, steps, hp.min_lr_ratio))
    prompt = dm.encode(hp.sample_prompt)[None]

    def sample() -> str:
        gen = torch.Generator().manual_seed(hp.generate_seed)
        return dm.decode(model.generate(prompt, hp.sample_tokens, hp.temperature, hp.top_k, hp.top_p, gen)[0].tolist())

    def evaluate(split: str) -> float:
        model.eval()
        total = count = 0.0
        with torch.no_grad():
            for x, y in (dm.val_dataloader() if split == "val" else dm.test_dataloader()):
                total += F.cross_entropy(model(x).flatten(0, 1), y.flatten(), reduction="sum").item()
                count += y.numel()
        model.train()
        return total / count

    epoch = {"e": 0}  # the loader reseeds from the epoch, as the trainer's current_epoch does in the zoo run
    train = RandomBlockLoader(dm.splits["train"], dm.block_size, dm.batch_size, dm.steps_per_epoch, dm.seed,
                              lambda: epoch["e"])
    step, text, start = 0, "", time.perf_counter()
    model.train()
    while step < steps:
        for x, y in train:
            logits = model(x)
            loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), y.reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
            sched.step()
            step += 1
            if hp.sample_every and step % hp.sample_every == 0:
                sample()
            if step == steps:
                break
        val = evaluate("val")
        epoch["e"] += 1
    text = sample()
    train_time = time.perf_counter() - start
    return {"val_loss": val, "test_loss": evaluate("test"), "train_time_s": train_time,
            "tokens_per_s": steps * dm.batch_size * dm.block_size / train_time, "sample": text,
            "val_tokens": len(dm.splits["val"]), "test_tokens": len(dm.splits["test"])}


def zoo_run(recipe: Path, data_dir: str, threads: int, steps: int) -> dict[str, Any]:
    cfg = load_recipe(recipe, model="gpt")
    tokens = steps * cfg["data"]["batch_size"] * cfg["data"]["block_size"]
    with tempfile.TemporaryDirectory() as runs:
        code = zoo_main(["-c", str(recipe), "--data-dir", data_dir, "--runs-dir", runs, "--threads", str(threads),
                         "--trainer.max_steps", str(steps), "--trainer.enable_progress_bar", "false",
                         "--trainer.enable_model_summary", "false"])
        assert code == 0, f"train.py exited with {code}"
        run = next(Path(runs).glob("gpt/*/metrics.json")).parent
        metrics = json.loads((run / "metrics.json").read_text())
        samples = sorted((run / "artifacts").glob("samples_step*.txt"))
        sample = samples[-1].read_text() if samples else ""
    return {"val_loss": metrics["val/loss"], "test_loss": metrics["test/loss"], "train_time_s": metrics["train_time_s"],
            "wall_time_s": metrics["wall_time_s"], "tokens_per_s": tokens / metrics["train_time_s"], "sample": sample,
            "global_step": metrics["global_step"]}


def quality(args: argparse.Namespace) -> None:
    cfg = load_recipe(args.recipe, model="gpt")
    steps = cfg["trainer"]["max_steps"]
    print(f"threads {torch.get_num_threads()}, loadavg before: {loadavg()}")
    zoo = zoo_run(args.recipe, args.data_dir, args.threads, steps)
    print(f"loadavg after zoo run: {loadavg()}")
    plain = plain_loop(cfg, args.data_dir, steps)
    print(f"loadavg after plain run: {loadavg()}")
    n_val, n_test = plain["val_tokens"], plain["test_tokens"]
    batch, block = cfg["data"]["batch_size"], cfg["data"]["block_size"]
    print(f"\nTiny Shakespeare (char), {steps} steps x {batch} x {block} tokens, {args.threads} threads, "
          f"seed {cfg.get('seed_everything', 42)}")
    print(f"{'':6} {'val':>7} {'test':>7} {'val+test':>9} {'train s':>8} {'tokens/s':>9}")
    for name, r in (("zoo", zoo), ("plain", plain)):
        both = (r["val_loss"] * n_val + r["test_loss"] * n_test) / (n_val + n_test)
        print(f"{name:6} {r['val_loss']:7.4f} {r['test_loss']:7.4f} {both:9.4f} {r['train_time_s']:8.1f} "
              f"{r['tokens_per_s']:9.0f}")
    print(f"nanoGPT (README, same budget): val loss {NANOGPT_VAL_LOSS}; goal <= 1.80")
    print(f"zoo wall time (fit + test): {zoo['wall_time_s']:.1f} s; zoo / plain tokens/s: "
          f"{zoo['tokens_per_s'] / plain['tokens_per_s']:.3f}")
    print(f"\nzoo sample after training (prompt {cfg['model'].get('sample_prompt')!r}):\n{zoo['sample']}")


def throughput(args: argparse.Namespace) -> None:
    cfg = load_recipe(args.recipe, model="gpt")
    print(f"threads {torch.get_num_threads()}, loadavg before: {loadavg()}")
    # untimed one-epoch warm-ups: one-off costs (kernel JIT, lazy imports) fall on neither timed run. Whole epochs:
    # a max_steps that stops mid-epoch skips that epoch's validation and EarlyStopping then finds no val/loss
    warm = cfg["data"]["steps_per_epoch"]
    plain_loop(cfg, args.data_dir, warm)
    zoo_run(args.recipe, args.data_dir, args.threads, warm)
    runs: dict[str, list[float]] = {"plain": [], "zoo": []}
    for rep in range(args.reps):
        for name in ("plain", "zoo") if rep % 2 == 0 else ("zoo", "plain"):
            r = plain_loop(cfg, args.data_dir, args.steps) if name == "plain" else zoo_run(
                args.recipe, args.data_dir, args.threads, args.steps)
            runs[name].append(r["tokens_per_s"])
            print(f"rep {rep} {name:6} {r['tokens_per_s']:8.0f} tokens/s  (loadavg {loadavg()})")
    ratios = [z / p for z, p in zip(runs["zoo"], runs["plain"])]
    mean = {k: statistics.mean(v) for k, v in runs.items()}
    print(f"\n{args.steps} steps per run, {args.threads} threads: plain {mean['plain']:.0f} tokens/s, zoo "
          f"{mean['zoo']:.0f} tokens/s; zoo / plain {mean['zoo'] / mean['plain']:.3f} (per rep "
          f"{', '.join(f'{r:.3f}' for r in ratios)}, median {statistics.median(ratios):.3f}); target >= 0.95")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--recipe", type=Path, default=RECIPE)
    parser.add_argument("--part", choices=("quality", "throughput"), default="quality")
    parser.add_argument("--steps", type=int, default=500, help="training steps per throughput run (whole epochs)")
    parser.add_argument("--reps", type=int, default=2, help="throughput repetitions, alternating the order")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    quality(args) if args.part == "quality" else throughput(args)


if __name__ == "__main__":
    main()
