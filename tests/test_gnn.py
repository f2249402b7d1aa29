"""GNN family: conv types fit the karate club, splits are clean, graph classification learns,
checkpoints reload exactly, and bad input fails with a clear message."""
from __future__ import annotations

import csv
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from zoo.datamodules.graph_classification import SyntheticGraphsDataModule, TUDataModule
from zoo.datamodules.graphs import (CoraDataModule, CoraLinkDataModule, KarateDataModule, KarateLinkDataModule,
                                   neighbor_sampling_available)
from zoo.errors import ZooUserError
from zoo.models.gnn import GNN


def _model(dm, **kw) -> GNN:
    return GNN(in_channels=dm.in_channels, num_classes=dm.num_classes, task=dm.task, **kw)


def _edges(edge_index: torch.Tensor) -> set[tuple[int, int]]:
    return {(min(a, b), max(a, b)) for a, b in edge_index.t().tolist()}


@pytest.mark.parametrize("conv", ["gcn", "gat", "sage", "gin"])
def test_each_conv_fits_karate(make_trainer, conv):
    L.seed_everything(0)
    dm = KarateDataModule()
    model = _model(dm, conv=conv, dropout=0.0)  # each conv's paper lr
    trainer = make_trainer(max_epochs=100)
    trainer.fit(model, dm)
    assert trainer.global_step == 100  # full batch: one optimisation step per epoch
    data = dm.splits["train"]
    model.eval()
    with torch.no_grad():
        pred = model(data.x, data.edge_index).argmax(-1)
    assert (pred[data.train_mask] == data.y[data.train_mask]).float().mean() >= 0.9


def test_paper_defaults_and_overrides():
    gcn = GNN(in_channels=1433, num_classes=7).hparams
    assert (gcn.conv, gcn.num_layers, gcn.hidden_channels, gcn.dropout, gcn.lr, gcn.weight_decay) == \
        ("gcn", 2, 16, 0.5, 0.01, 5e-4)
    gat = GNN(in_channels=1433, num_classes=7, conv="gat").hparams
    assert (gat.heads, gat.hidden_channels, gat.out_heads, gat.dropout, gat.lr, gat.act) == (8, 8, 1, 0.6, 0.005, "elu")
    assert GNN(in_channels=5, num_classes=2, task="graph").hparams.conv == "gin"
    assert GNN(in_channels=5, num_classes=2, conv="sage", hidden_channels=7).hparams.hidden_channels == 7
    link = GNN(in_channels=5, num_classes=2, task="link")
    assert link.monitor == "val/auc" and GNN.monitor == "val/acc"


def test_building_blocks_widths_and_decoders():
    """zoo/models/gnn_tasks.py: GAT concatenates hidden heads and averages output heads; residual skips
    project only where widths differ; the dot decoder is the inner product; sum readout adds node states."""
    from zoo.models.gnn_tasks import GNNEncoder, GraphReadout, LinkDecoder, make_conv, paper_defaults

    assert (paper_defaults("graph", None)["conv"], paper_defaults("graph", None)["pool"]) == ("gin", "sum")
    assert paper_defaults("link", "gat")["heads"] == 8
    x, edges = torch.randn(6, 5), torch.tensor([[0, 1, 2, 3, 4], [1, 2, 3, 4, 5]])
    gat = GNNEncoder("gat", 5, hidden_channels=4, out_channels=3, num_layers=2, heads=8, out_heads=2)
    assert gat.convs[0](x, edges).shape == (6, 32) and gat(x, edges).shape == (6, 3) and gat.out_width == 3
    res = GNNEncoder("gcn", 5, 16, 16, num_layers=3, norm="layer", residual=True, last_act=True)
    assert isinstance(res.skips[0], torch.nn.Linear) and isinstance(res.skips[1], torch.nn.Identity)
    assert res(x, edges).shape == (6, 16)
    z, pairs = torch.randn(6, 4), torch.tensor([[0, 2], [1, 5]])
    assert torch.allclose(LinkDecoder("dot", 4)(z, pairs), (z[[0, 2]] * z[[1, 5]]).sum(-1))
    readout = GraphReadout(4, 8, 3, pool="sum", dropout=0.0).eval()
    batch = torch.tensor([0, 0, 0, 1, 1, 1])
    sums = torch.stack([z[:3].sum(0), z[3:].sum(0)])
    assert torch.allclose(readout(z, batch), readout.head(sums))
    with pytest.raises(ZooUserError, match="unknown conv type 'gcm'; did you mean 'gcn'"):
        make_conv("gcm", 5, 4)
    with pytest.raises(ZooUserError, match="unknown decoder 'dott'; did you mean 'dot'"):
        LinkDecoder("dott", 4)


def test_gcn_weight_decay_on_first_layer_only():
    model = GNN(in_channels=10, num_classes=3)
    groups = model.param_groups()
    first = {id(p) for p in model.encoder.convs[0].parameters()}
    assert {id(p) for p in groups[0]["params"]} == first and groups[1]["weight_decay"] == 0.0


def test_karate_masks_disjoint_and_cover():
    data = KarateDataModule().loaded
    masks = torch.stack([data.train_mask, data.val_mask, data.test_mask]).int()
    assert (masks.sum(0) == 1).all()  # every node in exactly one split
    assert data.y[data.train_mask].unique().numel() == 4  # every class has training labels


def test_eval_has_no_dropout(make_trainer):
    L.seed_everything(0)
    dm = KarateDataModule()
    model = _model(dm, dropout=0.9)
    trainer = make_trainer(max_epochs=2)
    trainer.fit(model, dm)
    val = trainer.validate(model, dm, verbose=False)[0]["val/loss"]
    data = dm.splits["val"]
    model.eval()
    with torch.no_grad():
        expected = F.cross_entropy(model(data.x, data.edge_index)[data.val_mask], data.y[data.val_mask])
    assert val == pytest.approx(expected.item(), rel=1e-5)


def test_link_split_leaks_no_test_edge(make_trainer):
    dm = KarateLinkDataModule()
    dm.setup("fit")
    train, val, test = dm.splits["train"], dm.splits["val"], dm.splits["test"]
    test_pos, val_pos = _edges(test.pos_edge_label_index), _edges(val.pos_edge_label_index)
    assert test_pos and val_pos
    for graph in (train, val, test):  # message passing never sees a test edge
        assert not test_pos & _edges(graph.edge_index)
    assert not val_pos & _edges(train.edge_index) and not val_pos & _edges(val.edge_index)
    L.seed_everything(0)
    model = _model(dm)
    trainer = make_trainer(max_epochs=30)
    trainer.fit(model, dm)
    result = trainer.test(model, dm, verbose=False)[0]
    assert {"test/auc", "test/ap", "test/acc"} <= set(result)


def test_graph_classification_beats_chance(make_trainer):
    L.seed_everything(0)
    dm = SyntheticGraphsDataModule(num_graphs=240, batch_size=32)
    assert (dm.task, dm.num_classes, dm.in_channels) == ("graph", 3, 11)
    model = _model(dm, num_layers=3, hidden_channels=32)
    trainer = make_trainer(max_epochs=12)
    trainer.fit(model, dm)
    acc = trainer.test(model, dm, verbose=False)[0]["test/acc"]
    assert acc > 0.55, acc  # chance is 1/3


def test_checkpoint_reloads_identical_logits(make_trainer, tmp_path):
    L.seed_everything(0)
    dm = KarateDataModule()
    model = _model(dm, conv="gat", heads=2, norm="layer", residual=True)
    trainer = make_trainer(max_epochs=3)
    trainer.fit(model, dm)
    path = tmp_path / "gnn.ckpt"
    trainer.save_checkpoint(path)
    loaded = GNN.load_from_checkpoint(path)
    data = dm.splits["test"]
    model.eval(), loaded.eval()
    with torch.no_grad():
        assert torch.equal(model(data.x, data.edge_index), loaded(data.x, data.edge_index))
    assert loaded.hparams.heads == 2 and loaded.hparams.lr == 0.005


def test_neighbor_sampler_minibatches(make_trainer):
    if not neighbor_sampling_available():
        with pytest.raises(ZooUserError, match="needs pyg-lib or torch-sparse"):
            KarateDataModule(sampler="neighbor")
        pytest.skip("NeighborLoader needs pyg-lib or torch-sparse")
    L.seed_everything(0)
    dm = KarateDataModule(sampler="neighbor", batch_size=8, num_neighbors=(5, 5))
    model = _model(dm, conv="sage")
    trainer = make_trainer(max_epochs=1)
    trainer.fit(model, dm)
    assert trainer.global_step == 2  # 16 training nodes / 8 per batch


def test_predict_writes_csv(make_trainer, tmp_path):
    dm = KarateDataModule()
    model = _model(dm)
    preds = make_trainer().predict(model, dm)
    path = model.write_predictions(preds, tmp_path / "pred", dm)
    rows = list(csv.DictReader(open(path)))
    assert len(rows) == 34 and {r["prediction"] for r in rows} <= {"0", "1", "2", "3"}
    assert all(abs(sum(float(r[f"p_{c}"]) for c in range(4)) - 1) < 1e-3 for r in rows)


@pytest.mark.parametrize("kwargs, message", [
    (dict(conv="gcnn"), "unknown conv type 'gcnn'; did you mean 'gcn'"),
    (dict(conv="gcn", heads=4), "heads / out_heads apply to --model.conv gat only"),
    (dict(norm="group"), "unknown norm"),
    (dict(task="node", out_channels=8), "out_channels is the link-prediction embedding size"),
])
def test_bad_model_args(kwargs, message):
    with pytest.raises(ZooUserError, match=message):
        GNN(in_channels=4, num_classes=2, **kwargs)


def test_multi_device_refused():
    assert GNN.supports_multi_device is False
    model = GNN(in_channels=4, num_classes=2)
    model._trainer = type("FakeTrainer", (), {"world_size": 2})()
    with pytest.raises(ZooUserError, match="one device"):
        model.setup("fit")


def test_missing_raw_files_named(tmp_path):
    (tmp_path / "planetoid" / "Cora" / "raw").mkdir(parents=True)
    (tmp_path / "planetoid" / "Cora" / "raw" / "ind.cora.x").write_bytes(b"")
    dm = CoraDataModule(data_dir=str(tmp_path), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ZooUserError,
                       match=r"missing ind\.cora\.tx, .*ind\.cora\.test\.index in '.*planetoid/Cora/raw'"):
        dm.in_channels
    with pytest.raises(ZooUserError, match="needs --data-dir"):
        CoraDataModule().in_channels
    with pytest.raises(ZooUserError, match="MUTAG_A.txt"):
        TUDataModule(data_dir=str(tmp_path)).in_channels
    with pytest.raises(ZooUserError, match="sampler neighbor is for node classification"):
        KarateLinkDataModule(sampler="neighbor")


def test_cora_public_split_read_only(shared_data, tmp_path):
    raw = shared_data / "planetoid" / "Cora" / "raw"
    if not raw.is_dir():
        pytest.skip("no planetoid/Cora/raw in ../shared/data")
    before = sorted(p.name for p in (shared_data / "planetoid" / "Cora").iterdir())
    dm = CoraDataModule(data_dir=str(shared_data), cache_dir=str(tmp_path))
    data = dm.loaded
    assert (data.num_nodes, dm.in_channels, dm.num_classes) == (2708, 1433, 7)
    assert [int(m.sum()) for m in (data.train_mask, data.val_mask, data.test_mask)] == [140, 500, 1000]
    assert not (data.train_mask & data.test_mask).any() and not (data.val_mask & data.test_mask).any()
    assert sorted(p.name for p in (shared_data / "planetoid" / "Cora").iterdir()) == before
    assert (tmp_path / "planetoid" / "Cora" / "processed").is_dir()
    link = CoraLinkDataModule(data_dir=str(shared_data), cache_dir=str(tmp_path))
    link.setup("fit")
    assert not _edges(link.splits["test"].pos_edge_label_index) & _edges(link.splits["test"].edge_index)


def test_gat_keeps_the_paper_budget_and_selection_unless_told(tmp_path: Path, build_cli) -> None:
    """GAT (node task) selects on val/loss with a 1000-epoch budget; GCN keeps 200 epochs and val/acc;
    an explicit --trainer.max_epochs or -c config wins over the model's refinement."""
    from lightning.pytorch.callbacks import EarlyStopping

    def stopper(cli) -> EarlyStopping:
        return next(c for c in cli.trainer.callbacks if isinstance(c, EarlyStopping))

    gat = build_cli("gnn", "karate", "--model.conv=gat")
    assert gat.trainer.max_epochs == 1000 and (stopper(gat).monitor, stopper(gat).mode) == ("val/loss", "min")
    gcn = build_cli("gnn", "karate")
    assert gcn.trainer.max_epochs == 200 and stopper(gcn).monitor == "val/acc"
    assert build_cli("gnn", "karate", "--model.conv=gat", "--trainer.max_epochs=7").trainer.max_epochs == 7
    config = tmp_path / "cfg.yaml"
    config.write_text("trainer:\n  max_epochs: 9\n")
    assert build_cli("gnn", "karate", f"--config={config}", "--model.conv=gat").trainer.max_epochs == 9
