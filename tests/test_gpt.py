"""GPT language model and the ``lm`` DataModule: causality, generation, tokenizers, learning, predict, errors."""
from __future__ import annotations

import json
import math
import random
from collections import Counter
from pathlib import Path

import pytest
import torch

from zoo.cli import main
from zoo.datamodules._lm_tokenizer import LMTokenizer
from zoo.datamodules.language import LanguageDataModule, bundled_text
from zoo.errors import ZooUserError
from zoo.models.gpt import GPT, warmup_cosine

REPO = Path(__file__).resolve().parents[1]
TINY = dict(n_layer=1, n_head=2, n_embd=32)


def _words_text(n_words: int = 6000, seed: int = 0) -> str:
    """Seeded text of a few words: characters are predictable from their context, not from their frequency."""
    rng = random.Random(seed)
    words = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "far"]
    return " ".join(rng.choice(words) for _ in range(n_words)) + "\n"


def _write(tmp_path: Path, text: str, name: str = "corpus.txt") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_changing_a_future_token_never_changes_earlier_logits() -> None:
    torch.manual_seed(0)
    for positional in ("learned", "sinusoidal"):
        model = GPT(vocab_size=20, block_size=16, positional=positional, **TINY).eval()
        x = torch.randint(0, 20, (2, 16))
        y = x.clone()
        y[:, 9] = (y[:, 9] + 1) % 20
        with torch.no_grad():
            a, b = model(x), model(y)
        assert torch.allclose(a[:, :9], b[:, :9], atol=1e-6)
        assert not torch.allclose(a[:, 9:], b[:, 9:])


def test_generation_is_seeded_and_top_k_1_is_greedy() -> None:
    torch.manual_seed(0)
    model = GPT(vocab_size=12, block_size=8, **TINY).eval()
    prompt = torch.tensor([[1, 2, 3]])

    def sample(seed: int, **kw) -> torch.Tensor:
        return model.generate(prompt, 20, generator=torch.Generator().manual_seed(seed), **kw)

    assert torch.equal(sample(3), sample(3)) and not torch.equal(sample(3), sample(4))
    assert torch.equal(sample(3, top_k=3, top_p=0.9), sample(3, top_k=3, top_p=0.9))
    greedy = prompt
    with torch.no_grad():
        for _ in range(20):  # argmax decoding by hand, context cropped to block_size
            greedy = torch.cat([greedy, model(greedy[:, -8:])[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(sample(0, top_k=1), greedy) and torch.equal(sample(1, top_k=1), greedy)
    assert torch.equal(sample(5, top_p=1e-6), greedy)  # the nucleus of a tiny p is the likeliest token
    assert sample(0).shape == (1, 23)


def test_tokenizers_are_deterministic_round_trip_and_travel_as_plain_state() -> None:
    text = "To be, or not to be: that is the question.\nWhether 'tis nobler in the mind to suffer\n" * 20
    char = LMTokenizer.train("char", text)
    assert char.decode(char.encode(text).tolist()) == text and char.vocab == sorted(set(text))
    a, b = LMTokenizer.train("wordpiece", text, 80), LMTokenizer.train("wordpiece", text, 80)
    assert a.vocab == b.vocab and torch.equal(a.encode(text), b.encode(text))
    assert a.decode(a.encode("To  be, or\nnot").tolist()) == "to be, or not"  # lower-cased, spaces normalised
    for tok in (char, a):
        state = tok.to_state()
        assert json.loads(json.dumps(state)) == state  # plain types only
        again = LMTokenizer.from_state(state)
        assert torch.equal(again.encode(text), tok.encode(text)) and again.vocab == tok.vocab


def test_splits_are_contiguous_without_overlap_and_blocks_shift_by_one(tmp_path: Path) -> None:
    dm = LanguageDataModule(path=str(_write(tmp_path, _words_text(2000))), block_size=16, batch_size=4,
                            steps_per_epoch=3)
    dm.setup()
    parts = dm.splits
    assert torch.equal(torch.cat([parts["train"], parts["val"], parts["test"]]), dm.encode(dm.text))
    assert abs(len(parts["val"]) - 0.05 * len(dm.text)) <= 1
    batches = list(dm.train_dataloader())
    assert len(batches) == 3 and all(x.shape == (4, 16) and torch.equal(x[:, 1:], y[:, :-1]) for x, y in batches)
    assert all(torch.equal(x, x2) for (x, _), (x2, _) in zip(batches, dm.train_dataloader()))  # seeded
    xs, ys = (torch.cat(t).flatten() for t in zip(*dm.val_dataloader()))
    assert len(xs) > len(parts["val"]) - 16  # every validation token once, in order, targets shifted by one
    assert torch.equal(xs, parts["val"][: len(xs)]) and torch.equal(ys, parts["val"][1 : len(xs) + 1])


def test_tiny_gpt_learns_below_the_unigram_entropy(tmp_path: Path, make_trainer) -> None:
    torch.manual_seed(0)
    dm = LanguageDataModule(path=str(_write(tmp_path, _words_text())), block_size=16, batch_size=16,
                            steps_per_epoch=120, val_fraction=0.1, test_fraction=0.1)
    dm.setup()
    counts = torch.bincount(dm.splits["train"], minlength=dm.vocab_size).double()
    probs = counts[counts > 0] / counts.sum()
    unigram = float(-(probs * probs.log()).sum())  # nats per character
    model = GPT(vocab_size=dm.vocab_size, block_size=16, lr=3e-3, warmup_steps=10, sample_every=0,
                sample_prompt="the ", **TINY)
    trainer = make_trainer(max_epochs=1, gradient_clip_val=1.0)
    trainer.fit(model, datamodule=dm)
    val = float(trainer.callback_metrics["val/loss"])
    (result,) = trainer.test(model, datamodule=dm, verbose=False)
    assert val < 0.8 * unigram, (val, unigram)
    assert math.isclose(result["test/perplexity"], math.exp(result["test/loss"]), rel_tol=1e-4)
    assert list((tmp_path / "artifacts").glob("samples_step*.txt"))  # the end-of-training sample


def test_weight_decay_only_on_matrices_and_warmup_cosine() -> None:
    model = GPT(vocab_size=10, block_size=8, bias=True, **TINY)
    decay, no_decay = model.param_groups()
    assert all(p.dim() == 2 for p in decay["params"]) and all(p is not model.pos_emb for p in decay["params"])
    vectors = {id(p) for p in model.parameters() if p.dim() == 1}
    assert {id(p) for p in no_decay["params"]} == vectors | {id(model.pos_emb)}
    assert model.head.weight is model.tok_emb.weight
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    assert warmup_cosine(0, 10, 100, 0.1) == pytest.approx(0.1) and warmup_cosine(9, 10, 100, 0.1) == 1.0
    assert warmup_cosine(100, 10, 100, 0.1) == pytest.approx(0.1) and warmup_cosine(55, 10, 100, 0.1) == 0.55


def test_recipe_trains_any_text_file_and_predicts_from_a_prompt(tmp_path: Path, capsys) -> None:
    corpus = _write(tmp_path, _words_text(3000))
    runs = ["--runs-dir", str(tmp_path / "runs")]
    tiny = ["--model.n_layer", "1", "--model.n_embd", "32", "--model.n_head", "2", "--model.sample_every", "2",
            "--model.sample_prompt", "the ", "--model.predict_tokens", "30", "--trainer.max_steps", "4",
            "--data.steps_per_epoch", "2", "--threads", "1"]
    recipe = str(REPO / "recipes" / "gpt_tinyshakespeare.yaml")
    assert main(["-c", recipe, "--data.path", str(corpus), *tiny, *runs]) == 0
    (run,) = (tmp_path / "runs" / "gpt").glob("*")
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"val/loss", "test/loss", "test/perplexity"} <= set(metrics) and metrics["global_step"] == 4
    assert {p.name for p in (run / "artifacts").glob("*.txt")} >= {"samples_step000002.txt", "samples_step000004.txt"}
    ckpt = run / "checkpoints" / "last.ckpt"
    torch.load(ckpt, weights_only=True)  # checkpoints are data: tokenizer and hyper-parameters as plain types
    prompt = _write(tmp_path, "the cat ", "prompt.txt")
    capsys.readouterr()
    assert main(["predict", "--ckpt-path", str(ckpt), "--input", str(prompt), *runs]) == 0
    out = Path(capsys.readouterr().out.strip().splitlines()[-1].split("predictions: ")[1]).read_text()
    assert out.startswith("the cat ") and len(out) == len("the cat ") + 30 + 1
    _write(tmp_path, "the Zebra", "bad_prompt.txt")
    assert main(["predict", "--ckpt-path", str(ckpt), "--input", str(tmp_path / "bad_prompt.txt"), *runs]) == 2
    assert "'Z'" in capsys.readouterr().err


def test_bad_inputs_raise_one_line_user_errors(tmp_path: Path) -> None:
    def setup(**kw) -> LanguageDataModule:
        dm = LanguageDataModule(**kw)
        dm.setup()
        return dm

    with pytest.raises(ZooUserError, match="holds no text"):
        setup(path=str(_write(tmp_path, " \n\n", "empty.txt")))
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
    with pytest.raises(ZooUserError, match="not UTF-8"):
        setup(path=str(tmp_path / "latin1.txt"))
    with pytest.raises(ZooUserError, match="block_size"):
        setup(path=str(_write(tmp_path, "short text " * 20, "short.txt")), block_size=64)
    with pytest.raises(ZooUserError, match="does not exist"):
        setup(path=str(tmp_path / "missing.txt"))
    (tmp_path / "nothing").mkdir()
    with pytest.raises(ZooUserError, match="no .txt files"):
        setup(path=str(tmp_path / "nothing"))
    with pytest.raises(ZooUserError, match="--data.path"):
        setup(data_dir=str(tmp_path))
    dm = setup(path=str(_write(tmp_path, _words_text(500))), block_size=8)
    with pytest.raises(ZooUserError, match="'C', 'I', 'K', 'Q', 'U'"):
        dm.encode("the QUICK cat")
    with pytest.raises(ZooUserError, match="divisible"):
        GPT(n_embd=30, n_head=4)


def test_folder_of_texts_and_relative_path_under_data_dir(tmp_path: Path) -> None:
    (tmp_path / "books").mkdir()
    _write(tmp_path / "books", _words_text(300, seed=1), "b.txt")
    _write(tmp_path / "books", _words_text(300, seed=2), "a.txt")
    dm = LanguageDataModule(data_dir=str(tmp_path), path="books", block_size=8)
    assert dm.text == _words_text(300, seed=2) + "\n\n" + _words_text(300, seed=1)


def test_bundled_default_text_needs_no_files() -> None:
    text = bundled_text()
    assert len(text) > 300_000 and text == bundled_text()
    assert Counter(text).most_common(1)[0][0] == " "
