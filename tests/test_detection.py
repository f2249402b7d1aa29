"""Object detection: label formats and their box conventions, generated scenes, bad input, mAP on a case worked
out by hand, one fit/test step per arch, predict, export and the weights policy."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from zoo.cli import main
from zoo.datamodules._detection_formats import (Record, detect_format, read_annotations, validate, write_coco,
                                                write_voc, write_yolo)
from zoo.datamodules.detection import DetectionDataModule, DetectionScenesDataModule, MNISTDetectionDataModule
from zoo.errors import ZooUserError
from zoo.models._detection_nets import pr_curve_figure
from zoo.models.detector import Detector, _map_metric, central_box

TINY_NET = dict(min_size=64, max_size=64, fpn_channels=32, proposals=32, rois_per_image=16, box_head_dim=32,
                pretrained="false")


def _image(path: Path, w: int = 40, h: int = 30) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((np.random.default_rng(len(path.name)).random((h, w, 3)) * 255).astype(np.uint8)).save(path)
    return path


def _records(folder: Path, n: int = 3) -> list[Record]:
    recs = []
    for i in range(n):
        boxes = np.array([[0, 0, 10, 12], [5 + i, 3, 40, 30]], np.float32)[: 1 + i % 2]
        recs.append(Record(_image(folder / f"im{i}.png"), boxes, ["cat", "dog"][: len(boxes)], (40, 30)))
    return recs


def test_box_conventions_and_round_trip_voc_coco_yolo(tmp_path: Path) -> None:
    recs = _records(tmp_path / "images")
    write_voc(recs, tmp_path / "annotations")
    xml = (tmp_path / "annotations" / "im0.xml").read_text()
    assert "<xmin>1</xmin>" in xml and "<xmax>10</xmax>" in xml  # VOC: 1-based, inclusive pixel indices
    voc, classes, fmt = read_annotations(tmp_path, "auto")
    assert fmt == "voc" and classes == ["cat", "dog"]
    write_coco(validate(voc, classes), classes, tmp_path / "coco" / "annotations.json")
    coco = json.loads((tmp_path / "coco" / "annotations.json").read_text())
    assert coco["annotations"][0]["bbox"] == [0.0, 0.0, 10.0, 12.0]  # COCO: x, y, width, height
    (tmp_path / "coco" / "images").symlink_to(tmp_path / "images")
    back, coco_classes, fmt = read_annotations(tmp_path / "coco", "auto")
    assert fmt == "coco" and coco_classes == classes
    write_yolo(validate(back, classes), classes, tmp_path / "yolo" / "labels")
    assert (tmp_path / "yolo" / "labels" / "im0.txt").read_text().split()[1:] == ["0.12500000", "0.20000000",
                                                                                  "0.25000000", "0.40000000"]
    (tmp_path / "yolo" / "images").symlink_to(tmp_path / "images")
    (tmp_path / "yolo" / "classes.txt").write_text("cat\ndog\n")
    yolo, _, fmt = read_annotations(tmp_path / "yolo", "auto")
    assert fmt == "yolo"
    for a, b in zip(recs, validate(yolo, classes)):  # original -> VOC -> COCO -> YOLO -> pixels again
        assert a.names == b.names and np.allclose(a.boxes, b.boxes, atol=1e-3), (a.boxes, b.boxes)
    assert detect_format(tmp_path / "images") == ""
    assert read_annotations(tmp_path / "images", "coco")[2] == ""  # --data.format coco on a folder without a JSON
    (tmp_path / "broken.json").write_text('{"images": [{"id": 1}], "annotations": []}')
    with pytest.raises(ZooUserError, match="coco labels.*cannot be read.*KeyError"):
        read_annotations(tmp_path / "broken.json", "coco")


def _voc_folder(root: Path, n: int = 10) -> Path:
    write_voc(_records(root / "images", n), root / "annotations")
    return root


def test_datamodule_reads_a_folder_with_seeded_splits_and_detection_lists(tmp_path: Path) -> None:
    dm = DetectionDataModule(str(_voc_folder(tmp_path)), batch_size=3, val_fraction=0.2, test_fraction=0.2)
    assert dm.class_names == ("cat", "dog") and dm.num_classes == 2
    dm.setup()
    assert [len(dm.splits[s][0]) for s in ("train", "val", "test")] == [6, 2, 2]
    images, targets = next(iter(dm.train_dataloader()))
    assert len(images) == 3 and images[0].shape == (3, 30, 40) and images[0].dtype == torch.float32
    assert targets[0]["boxes"].shape[1] == 4 and set(targets[0]["labels"].tolist()) <= {1, 2}
    other = DetectionDataModule(str(tmp_path), seed=1, val_fraction=0.2, test_fraction=0.2)
    other.setup()
    assert other.splits["test"][0] != dm.splits["test"][0]


def test_folder_with_its_own_split_and_box_aware_flip(tmp_path: Path) -> None:
    from torchvision.transforms import v2

    from zoo.datamodules._detection_data import _DetectionSet

    for split in ("train", "val"):
        write_voc(_records(tmp_path / split / "images"), tmp_path / split / "annotations")
    dm = DetectionDataModule(str(tmp_path))
    dm.setup()
    assert len(dm.splits["train"][0]) == 3 and dm.splits["test"][0] == dm.splits["val"][0]  # no test/: val
    flipped = _DetectionSet(dm.splits["val"], v2.RandomHorizontalFlip(p=1.0), 10000)
    image, target = flipped[0]
    assert torch.allclose(target["boxes"], torch.tensor([[30.0, 0.0, 40.0, 12.0]]))  # x -> 40 - x
    plain = _DetectionSet(dm.splits["val"], None, 10000)[0][0]
    assert torch.equal(image, plain.flip(-1))


def test_bad_annotations_are_skipped_with_one_warning_or_refused(tmp_path: Path) -> None:
    recs = _records(tmp_path / "images", 6)
    recs[1].boxes[0] = [30, 5, 45, 20]  # past the 40 px wide image
    recs[2].boxes[0] = [20, 5, 20, 9]  # xmax == xmin
    recs[3].names[0] = "zebra"  # unknown class
    write_voc(recs, tmp_path / "annotations")
    (tmp_path / "images" / "im4.png").unlink()  # annotation whose image is missing
    (tmp_path / "images" / "im5.png").write_bytes(b"not an image")  # unreadable
    with pytest.warns(UserWarning, match="skipping 5 image") as caught:
        dm = DetectionDataModule(str(tmp_path), classes=["cat", "dog"], val_fraction=0.0, test_fraction=0.0)
        dm.setup()
    message = str(next(w.message for w in caught if "skipping" in str(w.message)))
    for name, why in (("im1", "outside"), ("im2", "xmax <= xmin"), ("im3", "zebra"), ("im4", "missing"),
                      ("im5", "cannot be read")):
        assert f"{name}.xml" in message and why in message, (name, message)
    assert len(dm.splits["train"][0]) == 1
    with pytest.raises(ZooUserError, match="5 file.*invalid annotations.*on_invalid skip"):
        DetectionDataModule(str(tmp_path), classes=["cat", "dog"], on_invalid="error").setup()


def test_empty_or_unlabelled_data_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _image(tmp_path / "plain" / "a.png")
    args = ["--model", "detector", "--data", "detection", "--threads", "1", "--runs-dir", str(tmp_path / "runs")]
    assert main([*args, "--data-dir", str(tmp_path / "plain")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no VOC XML, COCO JSON or YOLO txt labels" in err
    (tmp_path / "bad" / "annotations").mkdir(parents=True)
    (tmp_path / "bad" / "annotations" / "x.xml").write_text("<annotation><filename>gone.jpg</filename>"
                                                             "<object><name>a</name><bndbox><xmin>1</xmin><ymin>1</ymin>"
                                                             "<xmax>5</xmax><ymax>5</ymax></bndbox></object></annotation>")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main([*args, "--data-dir", str(tmp_path / "bad")]) == 2
    assert "no valid annotated image" in capsys.readouterr().err


def test_generated_scenes_are_seeded_with_exact_boxes() -> None:
    a, b = DetectionScenesDataModule(num_images=20, seed=3), DetectionScenesDataModule(num_images=20, seed=3)
    c = DetectionScenesDataModule(num_images=20, seed=4)
    for dm in (a, b, c):
        dm.setup()
    assert all(torch.equal(x, y) for x, y in zip(a.splits["train"][0], b.splits["train"][0]))
    assert not torch.equal(a.splits["train"][0][0], c.splits["train"][0][0])
    for image, boxes, labels in zip(*a.splits["test"]):
        assert len(boxes) >= 1 and labels.min() >= 1 and labels.max() <= 10
        for x0, y0, x1, y1 in boxes.long().tolist():  # tight: the box's border rows / columns hold the digit
            patch = image[0, y0:y1, x0:x1].int()
            assert patch[0].max() >= 64 and patch[-1].max() >= 64 and patch[:, 0].max() >= 64


def test_mnist_detection_canvases_from_idx_files(tmp_path: Path) -> None:
    from tests.test_foundation import _write_idx

    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 40), ("t10k", 10)):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte.gz", (rng.random((n, 28, 28)) > 0.5) * 255)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    before = sorted(tmp_path.rglob("*"))
    dm = MNISTDetectionDataModule(str(tmp_path), num_train=6, num_val=2, num_test=3, canvas=64, per_image=(1, 2))
    dm.setup()
    assert dm.image_size == 64 and [len(dm.splits[s][0]) for s in ("train", "val", "test")] == [6, 2, 3]
    assert dm.splits["train"][0][0].shape == (1, 64, 64) and sorted(tmp_path.rglob("*")) == before
    (tmp_path / "empty").mkdir()
    with pytest.raises(ZooUserError, match="no train-images-idx3-ubyte"):
        MNISTDetectionDataModule(str(tmp_path / "empty"), num_train=2).setup()


def test_raccoon_uses_the_authors_split(shared_data: Path) -> None:
    from zoo.datamodules.detection import RaccoonDataModule

    dm = RaccoonDataModule(str(shared_data))
    dm.setup()
    assert dm.class_names == ("raccoon",) and [len(dm.splits[s][0]) for s in ("train", "val", "test")] == [144, 16, 40]
    test_names = {p.name for p in dm.splits["test"][0]}
    assert len(test_names) == 40 and not test_names & {p.name for p in dm.splits["train"][0]}


def test_map_on_a_case_worked_out_by_hand() -> None:
    """2 images, 3 true boxes; detections by score: TP (0.9), FP (0.8), TP (0.7). Precision 1, 1/2, 2/3 at recall
    1/3, 1/3, 2/3; COCO's 101-point interpolation: 34 points at 1, 33 at 2/3, the rest 0 -> AP = 56/101."""
    box = lambda *v: torch.tensor([v], dtype=torch.float32)  # noqa: E731
    targets = [{"boxes": torch.cat([box(0, 0, 10, 10), box(20, 20, 30, 30)]), "labels": torch.tensor([1, 1])},
               {"boxes": box(5, 5, 15, 15), "labels": torch.tensor([1])}]
    preds = [{"boxes": torch.cat([box(0, 0, 10, 10), box(50, 50, 60, 60)]), "scores": torch.tensor([0.9, 0.8]),
              "labels": torch.tensor([1, 1])},
             {"boxes": box(5, 5, 15, 15), "scores": torch.tensor([0.7]), "labels": torch.tensor([1])}]
    metric = _map_metric()
    metric.update(preds, targets)
    result = metric.compute()
    for key in ("map", "map_50", "map_75"):
        assert result[key].item() == pytest.approx(56 / 101, abs=1e-4), key
    assert result["mar_100"].item() == pytest.approx(2 / 3, abs=1e-4)
    from torchvision.ops import box_iou

    base = central_box(torch.zeros(3, 100, 200), 0.5)["boxes"]
    assert base.tolist() == [[50.0, 25.0, 150.0, 75.0]]
    assert box_iou(base, torch.tensor([[50.0, 25.0, 150.0, 50.0]])).item() == pytest.approx(0.5)


@pytest.mark.parametrize("arch,backbone", [("fasterrcnn", "resnet18"), ("retinanet", "resnet18"),
                                           ("fcos", "resnet18"), ("ssdlite", "mobilenet_v3_large")])
def test_one_fit_and_test_step_per_arch(arch: str, backbone: str, make_trainer, tmp_path: Path) -> None:
    dm = DetectionScenesDataModule(num_images=10, batch_size=2)
    model = Detector(num_classes=10, class_names=dm.class_names, image_size=64, arch=arch, backbone=backbone,
                     anchor_sizes=(16, 32, 64, 128, 256) if arch != "fcos" else None, **TINY_NET)
    trainer = make_trainer(limit_train_batches=1, limit_val_batches=1, limit_test_batches=1)
    trainer.fit(model, dm)
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    (result,) = trainer.test(model, dm, verbose=False)
    assert {"test/map", "test/map_50", "test/map_75", "test/mar_100"} <= set(result)
    artifacts = sorted(p.name.split("_step")[0] for p in (tmp_path / "artifacts").glob("*.png"))
    assert artifacts == ["pr_curve", "test_predictions"]
    out = model(torch.rand(2, 3, 64, 64))
    assert out.shape == (2, 100, 6)


def test_predict_writes_coco_results_and_pngs_and_export_scripts(make_trainer, tmp_path: Path) -> None:
    dm = DetectionScenesDataModule(num_images=10, batch_size=2)
    model = Detector(num_classes=10, class_names=dm.class_names, image_size=64, arch="fcos", score_thresh=0.0,
                     detections_per_img=5, **TINY_NET).eval()
    for name in ("a.png", "b.png"):
        _image(tmp_path / "in" / name, 64, 48)
    preds = make_trainer().predict(model, dataloaders=dm.predict_input(str(tmp_path / "in")))
    path = model.write_predictions(preds, tmp_path, dm)
    results = json.loads(path.read_text())
    per_image = [sum(r["image_id"] == i for r in results) for i in (1, 2)]
    assert path.name == "detections.json" and all(1 <= n <= 5 for n in per_image)  # <= detections_per_img
    assert set(results[0]) >= {"image_id", "category_id", "bbox", "score"}
    assert {r["image_id"] for r in results} == {1, 2}
    assert all(len(r["bbox"]) == 4 and r["bbox"][2] >= 0 and 1 <= r["category_id"] <= 10 for r in results)
    assert sorted(p.name for p in (tmp_path / "annotated").iterdir()) == ["a.png", "b.png"]
    scripted = model.to_torchscript()
    x = torch.rand(2, 3, 64, 64)
    assert torch.allclose(scripted(x), model(x), atol=1e-4)
    with pytest.raises(ZooUserError, match="readable image"):
        (tmp_path / "in" / "c.png").write_bytes(b"junk")
        dm.predict_input(str(tmp_path / "in"))


def test_class_list_that_does_not_match_is_refused(make_trainer) -> None:
    dm = DetectionScenesDataModule(num_images=10, batch_size=2)
    model = Detector(num_classes=2, class_names=("cat", "dog"), image_size=64, arch="fcos", **TINY_NET)
    with pytest.raises(ZooUserError, match="do not match"):
        make_trainer(limit_test_batches=1).test(model, dm, verbose=False)
    with pytest.raises(ZooUserError, match="do not match"):
        model.on_load_checkpoint({"hyper_parameters": {"class_names": ("cat", "cow")}})


def test_weights_policy_offline_and_local_files(tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="NO PRETRAINED WEIGHTS.*offline"):
        Detector(arch="fcos", image_size=64, fpn_channels=32, pretrained="auto")
    with pytest.raises(ZooUserError, match="cannot be had here"):
        Detector(arch="fcos", image_size=64, fpn_channels=32, pretrained="true")
    source = Detector(arch="fcos", image_size=64, **TINY_NET)
    torch.save(source.state_dict(), tmp_path / "w.pt")
    same = Detector(arch="fcos", image_size=64, **{**TINY_NET, "weights": str(tmp_path / "w.pt")})
    assert all(torch.equal(a, b) for a, b in zip(source.net.state_dict().values(), same.net.state_dict().values()))
    with pytest.warns(UserWarning, match="tensors do not fit"):  # another class count: all but the class head
        Detector(num_classes=3, arch="fcos", image_size=64, **{**TINY_NET, "weights": str(tmp_path / "w.pt")})
    with pytest.raises(ZooUserError, match="fit only"):
        Detector(arch="ssdlite", backbone="mobilenet_v3_large", image_size=64,
                 **{**TINY_NET, "weights": str(tmp_path / "w.pt")})


def test_pr_curve_leaves_out_classes_without_ground_truth() -> None:
    """torchmetrics marks a class with no ground truth by -1; it gets no curve and does not pull the mean down."""
    precision = torch.full((10, 101, 3, 4, 3), -1.0)  # (IoU thresholds, recall, classes, areas, max detections)
    precision[0, :, 0, 0, -1], precision[0, :, 1, 0, -1] = 1.0, 0.5
    (ax,) = pr_curve_figure(precision, ["cat", "dog", "fish"]).axes
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {"cat", "dog", "mean"}
    assert np.allclose(lines["mean"].get_ydata(), 0.75)
    assert ax.get_xlabel() == "recall" and ax.get_ylabel() == "precision"
