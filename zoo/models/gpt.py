"""Decoder-only GPT language model trained from scratch, with sampling (temperature, top-k, top-p).

Token embedding + positional encoding (learned or sinusoidal), pre-LayerNorm blocks of causal multi-head
self-attention (``F.scaled_dot_product_attention``) and a GELU MLP, dropout, a final LayerNorm and an
output layer tied to the token embedding; GPT-2 initialisation (residual projections scaled by
``1/sqrt(2 * n_layer)``); AdamW with weight decay on matrices only, linear warm-up then cosine decay
(gradient clipping is the trainer's ``gradient_clip_val``). Logs ``val/loss`` (nats per token) and
``val/perplexity`` (``test/`` likewise); every ``sample_every`` steps a sample from ``sample_prompt`` goes
to ``artifacts/samples_stepNNNNNN.txt`` and the logger.

Example:
    >>> model = GPT(vocab_size=65, block_size=64)
    >>> model(torch.zeros(2, 10, dtype=torch.long)).shape
    torch.Size([2, 10, 65])
    >>> model.generate(torch.zeros(1, 3, dtype=torch.long), max_new_tokens=5, top_k=1).shape
    torch.Size([1, 8])
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
import torchmetrics
from torch import nn

from zoo.artifacts import artifact_path
from zoo.datamodules.interfaces import TokenStreamData
from zoo.errors import ZooUserError
from zoo.models.base import ZooModule
from zoo.runs import is_wandb

__all__ = ["GPT", "warmup_cosine", "sinusoidal_encoding"]


def warmup_cosine(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """LR multiplier: linear warm-up over ``warmup`` steps, then cosine decay to ``min_ratio`` at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def sinusoidal_encoding(length: int, dim: int) -> torch.Tensor:
    """The fixed sine/cosine positional encoding of "Attention is all you need", shape (length, dim)."""
    pos = torch.arange(length, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim)
    pe[:, 0::2], pe[:, 1::2] = torch.sin(pos * freq), torch.cos(pos * freq[: dim // 2])
    return pe


class CausalSelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float, bias: bool) -> None:
        super().__init__()
        self.qkv, self.proj = nn.Linear(dim, 3 * dim, bias=bias), nn.Linear(dim, dim, bias=bias)
        self.heads, self.dropout, self.resid_drop = heads, dropout, nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True)
        return self.resid_drop(self.proj(y.transpose(1, 2).reshape(b, t, c)))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int, dropout: float, bias: bool) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(dim, bias=bias), nn.LayerNorm(dim, bias=bias)
        self.attn = CausalSelfAttention(dim, heads, dropout, bias)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim, bias=bias), nn.GELU(),
                                 nn.Linear(mlp_ratio * dim, dim, bias=bias), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(ZooModule):
    """Decoder-only GPT (causal self-attention) trained from scratch; generates text.

    Args:
        vocab_size / block_size: filled in from the DataModule by the CLI (tokens, context length).
        n_layer / n_head / n_embd: depth, attention heads and width.
        mlp_ratio: MLP hidden width as a multiple of ``n_embd``.
        dropout: dropout on embeddings, attention weights, residual branches.
        bias: biases in the linear and LayerNorm layers.
        positional: ``learned`` position embeddings or fixed ``sinusoidal`` encodings.
        tie_weights: share the token embedding with the output layer.
        lr / weight_decay / betas: AdamW (decay on weight matrices and embeddings only).
        warmup_steps / min_lr_ratio: linear warm-up, then cosine decay to ``lr * min_lr_ratio`` at the last step.
        scheduler: ``warmup_cosine`` or ``none`` (constant LR).
        sample_every: write a sample every this many training steps (0: only at the end of training).
        sample_prompt / sample_tokens: the fixed prompt of those samples and their new tokens.
        temperature / top_k / top_p: sampling settings of samples and ``predict`` (``top_k=1``: greedy).
        predict_tokens: new tokens per prompt in ``train.py predict``.
        generate_seed: seed of the sampling generator (samples and predictions repeat exactly).
    """

    monitor, monitor_mode = "val/loss", "min"
    trainer_defaults = {"max_epochs": 8, "gradient_clip_val": 1.0}
    data_interface = TokenStreamData
    predict_hint = "it continues the text of a prompt file"

    def __init__(
        self,
        vocab_size: int = 65,
        block_size: int = 64,
        n_layer: int = 4,
        n_head: int = 4,
        n_embd: int = 128,
        mlp_ratio: int = 4,
        dropout: float = 0.0,
        bias: bool = False,
        positional: Literal["learned", "sinusoidal"] = "learned",
        tie_weights: bool = True,
        lr: float = 1e-3,
        weight_decay: float = 0.1,
        betas: tuple[float, float] = (0.9, 0.99),
        warmup_steps: int = 100,
        min_lr_ratio: float = 0.1,
        scheduler: Literal["warmup_cosine", "none"] = "warmup_cosine",
        sample_every: int = 500,
        sample_prompt: str = "The ",
        sample_tokens: int = 200,
        temperature: float = 0.8,
        top_k: int | None = None,
        top_p: float | None = None,
        predict_tokens: int = 500,
        generate_seed: int = 0,
    ) -> None:
        super().__init__()
        if n_embd % n_head:
            raise ZooUserError(f"n_embd ({n_embd}) must be divisible by n_head ({n_head})")
        if positional not in ("learned", "sinusoidal"):
            raise ZooUserError(f"unknown positional '{positional}'; choose learned or sinusoidal")
        if vocab_size < 2 or block_size < 1:
            raise ZooUserError(f"vocab_size must be >= 2 and block_size >= 1, got {vocab_size} and {block_size}")
        self.save_hyperparameters()
        self.tok_emb = nn.Embedding(vocab_size, n_embd)
        if positional == "learned":
            self.pos_emb = nn.Parameter(torch.zeros(block_size, n_embd))
        else:
            self.register_buffer("pos_emb", sinusoidal_encoding(block_size, n_embd), persistent=False)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(n_embd, n_head, mlp_ratio, dropout, bias) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd, bias=bias)
        self.head = nn.Linear(n_embd, vocab_size, bias=False)
        self._init_weights(n_layer)
        if tie_weights:
            self.head.weight = self.tok_emb.weight
        for stage in ("train", "val", "test"):
            setattr(self, f"{stage}_loss", torchmetrics.MeanMetric())
        self.example_input_array = torch.zeros(1, block_size, dtype=torch.long)

    def _init_weights(self, n_layer: int) -> None:
        """GPT-2: N(0, 0.02) weights, zero biases, residual output projections N(0, 0.02 / sqrt(2 * n_layer))."""
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                std = 0.02 / math.sqrt(2 * n_layer) if name.endswith(("attn.proj.weight", "mlp.2.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Logits (B, T, vocab_size) for token ids (B, T), T <= block_size."""
        t = idx.shape[1]
        if t > self.hparams.block_size:
            raise ValueError(f"sequence of {t} tokens is longer than block_size {self.hparams.block_size}")
        x = self.drop(self.tok_emb(idx) + self.pos_emb[:t])
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))

    # ---- training --------------------------------------------------------------------------------------
    def _step(self, batch: Any, stage: str) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), y.reshape(-1))
        if stage == "train":
            self.log_train_step("train/loss", loss, self.train_loss, y.numel())
        else:
            getattr(self, f"{stage}_loss").update(loss.detach(), weight=y.numel())
        return loss

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "test")

    def _log_epoch(self, stage: str) -> None:
        metric = getattr(self, f"{stage}_loss")
        if not metric.update_count:
            return
        loss = metric.compute()
        self.log(f"{stage}/loss", loss, prog_bar=True)
        if stage != "train":
            self.log(f"{stage}/perplexity", loss.exp())
        metric.reset()

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def param_groups(self) -> list[dict[str, Any]]:
        """Weight decay on matrices (linear weights, embeddings), none on biases, LayerNorms, positions."""
        params = [p for p in self.parameters() if p.requires_grad]  # the tied weight appears once
        decay = [p for n, p in self.named_parameters() if p.requires_grad and p.dim() >= 2 and n != "pos_emb"]
        ids = {id(p) for p in decay}
        return [{"params": decay, "weight_decay": self.hparams.weight_decay},
                {"params": [p for p in params if id(p) not in ids], "weight_decay": 0.0}]

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        opt = torch.optim.AdamW(self.param_groups(), lr=hp.lr, betas=tuple(hp.betas))
        if hp.scheduler == "none":
            return opt
        total = self._total_steps()
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: warmup_cosine(step, hp.warmup_steps, total, hp.min_lr_ratio))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ---- generation --------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, prompt_ids: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Append ``max_new_tokens`` sampled tokens to ``prompt_ids`` (B, T); the context is cropped to
        ``block_size``. ``top_k`` keeps the k likeliest tokens (1: greedy), ``top_p`` the smallest set
        whose probability reaches p; pass a seeded ``generator`` for repeatable samples."""
        if temperature <= 0:
            raise ZooUserError(f"temperature must be > 0, got {temperature}; use top_k=1 for greedy decoding")
        if prompt_ids.dim() != 2 or prompt_ids.shape[1] == 0:
            raise ZooUserError("generate needs prompt ids of shape (batch, length >= 1)")
        was_training, idx = self.training, prompt_ids.to(self.device)
        self.eval()
        for _ in range(max_new_tokens):
            logits = self(idx[:, -self.hparams.block_size:])[:, -1, :] / temperature
            if top_k is not None:
                kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            if top_p is not None:
                sorted_logits, order = logits.sort(dim=-1, descending=True)
                cum = sorted_logits.softmax(-1).cumsum(-1)
                drop = cum - sorted_logits.softmax(-1) >= top_p  # keep tokens until the mass reaches top_p
                logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
            probs = logits.softmax(-1)
            nxt = probs.argmax(-1, keepdim=True) if top_k == 1 else torch.multinomial(probs, 1, generator=generator)
            idx = torch.cat([idx, nxt], dim=1)
        self.train(was_training)
        return idx

    def _sample(self, prompt_ids: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
        hp = self.hparams
        gen = torch.Generator(device=self.device).manual_seed(hp.generate_seed)
        return self.generate(prompt_ids, max_new_tokens, hp.temperature, hp.top_k, hp.top_p, gen)

    def _write_sample(self) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if dm is None or not hasattr(dm, "decode") or not self.trainer.is_global_zero:
            return  # samples need the DataModule's tokenizer
        try:
            prompt = dm.encode(self.hparams.sample_prompt)[None]
        except ZooUserError as exc:
            raise ZooUserError(f"--model.sample_prompt: {exc}") from exc
        if prompt.shape[1] == 0:
            raise ZooUserError(f"--model.sample_prompt {self.hparams.sample_prompt!r} encodes to no tokens; pass "
                               "a prompt in the training text's vocabulary")
        step = self.trainer.global_step
        text = dm.decode(self._sample(prompt, self.hparams.sample_tokens)[0].tolist())
        artifact_path(self.trainer, f"samples_step{step:06d}", ".txt").write_text(text + "\n", encoding="utf-8")
        for logger in self.trainer.loggers:
            if is_wandb(logger):
                logger.log_text(key="samples", columns=["step", "text"], data=[[step, text]], step=step)
            elif hasattr(getattr(logger, "experiment", None), "add_text"):
                logger.experiment.add_text("samples", text, global_step=step)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        every = self.hparams.sample_every
        if every > 0 and self.trainer.global_step % every == 0:
            self._write_sample()

    def on_train_end(self) -> None:
        self._write_sample()

    # ---- predict -----------------------------------------------------------------------------------------
    def predict_step(self, batch: Any, batch_idx: int = 0) -> torch.Tensor:
        return self._sample(batch[0], self.hparams.predict_tokens)

    def write_predictions(self, predictions: list[Any], out_dir: Path, datamodule: Any) -> Path:
        """``generated.txt``: each prompt followed by its continuation (also printed)."""
        text = "\n\n".join(datamodule.decode(row.tolist()) for ids in predictions for row in ids)
        print(text)
        path = out_dir / "generated.txt"
        path.write_text(text + "\n", encoding="utf-8")
        return path
