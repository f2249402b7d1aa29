"""Detection label formats (PASCAL VOC XML, COCO JSON, YOLO txt), their exact box conventions and validation
(kept beside :mod:`zoo.datamodules.detection`).

Every reader returns :class:`Record` s whose boxes are continuous pixel corners ``x0, y0, x1, y1`` (the
convention of ``torchvision.ops``): pixel ``i`` covers ``[i, i + 1)``.

- VOC: integer 1-based pixel indices, both ends inclusive: ``x0 = xmin - 1``, ``x1 = xmax``.
- COCO: ``bbox = [x, y, w, h]`` in continuous pixels: ``x0 = x``, ``x1 = x + w``.
- YOLO: ``class cx cy w h`` normalised by the image width / height: ``x0 = (cx - w / 2) * W``.

Example:
    >>> recs, classes, problems = read_annotations(Path("my_set"), "auto")  # doctest: +SKIP
    >>> write_coco(recs, classes, Path("out/annotations.json"))  # doctest: +SKIP
"""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
FORMATS = ("voc", "coco", "yolo")


@dataclass
class Record:
    """One image and its boxes (``float32`` (N, 4) ``x0, y0, x1, y1`` pixels) with class names."""

    file: Path
    boxes: np.ndarray
    names: list[str]
    size: tuple[int, int] | None = None  # (width, height) when the annotation states it
    source: str = ""  # the annotation file (for messages)
    problems: list[str] = field(default_factory=list)


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS) if folder.is_dir() else []


def _first_dir(root: Path, names: tuple[str, ...]) -> Path | None:
    return next((root / n for n in names if (root / n).is_dir()), None)


def _coco_json(root: Path) -> Path | None:
    for path in sorted([*root.glob("*.json"), *root.glob("annotations/*.json")]):
        try:
            head = path.read_text(errors="replace")[:200000]
        except OSError:
            continue
        if '"images"' in head and '"annotations"' in head:
            return path
    return None


def detect_format(root: Path) -> str:
    """``coco`` (a JSON with images and annotations), ``voc`` (XML files) or ``yolo`` (txt labels), else ''."""
    if root.is_file() and root.suffix == ".json":
        return "coco"
    if _coco_json(root):
        return "coco"
    xml_dir = _first_dir(root, ("annotations", "Annotations")) or root
    if any(xml_dir.glob("*.xml")):
        return "voc"
    label_dir = _first_dir(root, ("labels",)) or root
    if any(p.name != "classes.txt" for p in label_dir.glob("*.txt")):
        return "yolo"
    return ""


def read_voc(root: Path) -> tuple[list[Record], list[str]]:
    """VOC XML files in ``root/annotations`` (or ``Annotations``, or ``root``); images from the XML's
    ``<filename>`` in ``root/images`` / ``JPEGImages`` / beside the XML."""
    xml_dir = _first_dir(root, ("annotations", "Annotations")) or root
    image_dirs = [d for d in (_first_dir(root, ("images", "JPEGImages")), xml_dir, root) if d is not None]
    records = []
    for xml in sorted(xml_dir.glob("*.xml")):
        try:
            tree = ET.parse(xml).getroot()
        except ET.ParseError as exc:
            records.append(Record(xml, np.zeros((0, 4), np.float32), [], source=str(xml),
                                  problems=[f"not valid XML ({exc})"]))
            continue
        name = (tree.findtext("filename") or xml.stem + ".jpg").strip()
        file = next((d / name for d in image_dirs if (d / name).is_file()), image_dirs[0] / name)
        boxes, names, problems = [], [], []
        for i, obj in enumerate(tree.findall("object")):
            bb = obj.find("bndbox")
            try:
                xmin, ymin, xmax, ymax = (float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
            except (AttributeError, TypeError, ValueError):
                problems.append(f"object {i} has no numeric bndbox")
                continue
            boxes.append([xmin - 1, ymin - 1, xmax, ymax])
            names.append((obj.findtext("name") or "").strip())
        width, height = tree.findtext("size/width"), tree.findtext("size/height")
        size = (int(float(width)), int(float(height))) if width and height else None
        records.append(Record(file, np.asarray(boxes, np.float32).reshape(-1, 4), names, size, str(xml), problems))
    classes = sorted({n for r in records for n in r.names})
    return records, classes


def read_coco(root: Path) -> tuple[list[Record], list[str]]:
    """A COCO JSON (``root`` itself, ``root/*.json`` or ``root/annotations/*.json``); ``file_name`` is looked
    up under ``root/images`` and ``root``. Annotations with ``iscrowd`` are left out (COCO evaluation ignores them)."""
    path = root if root.is_file() else _coco_json(root)
    base = path.parent.parent if path.parent.name == "annotations" else path.parent
    image_dirs = [d for d in (base / "images", base) if d.is_dir()]
    data = json.loads(path.read_text())
    cats = {int(c["id"]): str(c["name"]) for c in data.get("categories", [])}
    classes = [cats[k] for k in sorted(cats)]
    records: dict[int, Record] = {}
    for img in data.get("images", []):
        name = str(img["file_name"])
        file = next((d / name for d in image_dirs if (d / name).is_file()), (image_dirs or [base])[0] / name)
        size = (int(img["width"]), int(img["height"])) if "width" in img and "height" in img else None
        records[int(img["id"])] = Record(file, np.zeros((0, 4), np.float32), [], size, str(path))
    orphans: list[Record] = []
    grouped: dict[int, list] = {k: [] for k in records}
    for ann in data.get("annotations", []):
        if ann.get("iscrowd", 0):
            continue
        image_id = int(ann["image_id"])
        if image_id not in records:
            orphans.append(Record(base / f"<image id {image_id}>", np.zeros((0, 4), np.float32), [], None, str(path),
                                  [f"annotation {ann.get('id')} refers to image id {image_id}, which is not listed"]))
            continue
        x, y, w, h = (float(v) for v in ann["bbox"])
        cat = int(ann["category_id"])
        grouped[image_id].append(([x, y, x + w, y + h], cats.get(cat, f"<category id {cat}>")))
    for image_id, anns in grouped.items():
        rec = records[image_id]
        rec.boxes = np.asarray([a[0] for a in anns], np.float32).reshape(-1, 4)
        rec.names = [a[1] for a in anns]
    return [*records.values(), *orphans], classes


def _yolo_classes(root: Path) -> list[str]:
    for name in ("classes.txt", "labels/classes.txt", "obj.names"):
        if (root / name).is_file():
            return [line.strip() for line in (root / name).read_text().splitlines() if line.strip()]
    for name in ("data.yaml", "dataset.yaml"):
        if (root / name).is_file():
            import yaml

            names = (yaml.safe_load((root / name).read_text()) or {}).get("names", [])
            return [str(names[k]) for k in sorted(names)] if isinstance(names, dict) else [str(n) for n in names]
    return []


def read_yolo(root: Path) -> tuple[list[Record], list[str]]:
    """YOLO ``class cx cy w h`` lines (normalised) in ``root/labels/<stem>.txt`` for ``root/images/<stem>.*``, or
    beside the images; class names from ``classes.txt`` / ``obj.names`` / ``data.yaml`` (else the ids).
    Sizes are read from the image headers, so a record's boxes need the image (see :func:`validate`)."""
    image_dir = _first_dir(root, ("images",)) or root
    label_dir = _first_dir(root, ("labels",)) or image_dir
    classes = _yolo_classes(root)
    images = {p.stem: p for p in _images_in(image_dir)}
    labels = {p.stem: p for p in label_dir.glob("*.txt") if p.name not in ("classes.txt",)}
    records = []
    for stem in sorted(set(images) | set(labels)):
        file = images.get(stem, image_dir / f"{stem}.<missing>")
        rows, names, problems = [], [], []
        text = labels[stem].read_text() if stem in labels else ""
        for i, line in enumerate(text.splitlines()):
            parts = line.split()
            if not parts:
                continue
            try:
                cls, cx, cy, w, h = int(parts[0]), *map(float, parts[1:5])
            except ValueError:
                problems.append(f"line {i + 1} is not 'class cx cy w h'")
                continue
            rows.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
            names.append(classes[cls] if 0 <= cls < len(classes) else str(cls) if not classes else f"<class id {cls}>")
        source = str(labels.get(stem, file))
        rec = Record(file, np.asarray(rows, np.float32).reshape(-1, 4), names, None, source, problems)
        rec.size = (-1, -1)  # normalised: scaled to pixels by validate()
        records.append(rec)
    if not classes:
        classes = sorted({n for r in records for n in r.names}, key=lambda n: (len(n), n))
    return records, classes


def read_annotations(root: Path, fmt: str = "auto") -> tuple[list[Record], list[str], str]:
    """(records, class names in the file's order, the format used) for a folder (or a COCO JSON file)."""
    from zoo.errors import ZooUserError

    fmt = detect_format(root) if fmt == "auto" else fmt
    reader = {"voc": read_voc, "coco": read_coco, "yolo": read_yolo}.get(fmt)
    if reader is None or (fmt == "coco" and not (root.is_file() or _coco_json(root))):
        return [], [], ""
    try:
        records, classes = reader(root)
    except (KeyError, TypeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise ZooUserError(f"the {fmt} labels in '{root}' cannot be read ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0][:120]}); check the file against the format") from exc
    return records, classes, fmt


def validate(records: list[Record], classes: list[str]) -> list[Record]:
    """Check every record against its image (exists, opens, boxes inside it with x1 > x0 and y1 > y0, known class)
    and fill ``problems``; YOLO boxes are scaled to pixels here. Returns the records."""
    from PIL import Image

    known = set(classes)
    for rec in records:
        if not rec.file.is_file():
            rec.problems.append(f"image '{rec.file.name}' is missing")
            continue
        try:
            with Image.open(rec.file) as img:
                width, height = img.size
                img.verify()
        except Exception as exc:  # PIL raises many types for broken files
            rec.problems.append(f"image '{rec.file.name}' cannot be read ({str(exc).splitlines()[0][:80]})")
            continue
        if rec.size == (-1, -1):  # YOLO: normalised
            rec.boxes = rec.boxes * np.asarray([width, height, width, height], np.float32)
        rec.size = (width, height)
        tol = 1e-3 * max(width, height)
        for i, (box, name) in enumerate(zip(rec.boxes, rec.names)):
            x0, y0, x1, y1 = box.tolist()
            if not (x1 > x0 and y1 > y0):
                rec.problems.append(f"box {i} has xmax <= xmin or ymax <= ymin ({x0:g}, {y0:g}, {x1:g}, {y1:g})")
            elif x0 < -tol or y0 < -tol or x1 > width + tol or y1 > height + tol:
                rec.problems.append(f"box {i} ({x0:g}, {y0:g}, {x1:g}, {y1:g}) is outside the {width}x{height} image")
            if name not in known:
                rec.problems.append(f"box {i} has unknown class '{name}'")
        rec.boxes = rec.boxes.clip(0, [width, height, width, height]).astype(np.float32)
    return records


def write_voc(records: list[Record], folder: Path) -> None:
    """One VOC XML per record in ``folder`` (integer 1-based inclusive corners: exact for whole-pixel boxes)."""
    folder.mkdir(parents=True, exist_ok=True)
    for rec in records:
        root = ET.Element("annotation")
        ET.SubElement(root, "filename").text = rec.file.name
        size = ET.SubElement(root, "size")
        for key, value in zip(("width", "height", "depth"), (*rec.size, 3)):
            ET.SubElement(size, key).text = str(value)
        for (x0, y0, x1, y1), name in zip(rec.boxes.tolist(), rec.names):
            obj = ET.SubElement(root, "object")
            ET.SubElement(obj, "name").text = name
            bb = ET.SubElement(obj, "bndbox")
            for key, value in zip(("xmin", "ymin", "xmax", "ymax"), (x0 + 1, y0 + 1, x1, y1)):
                ET.SubElement(bb, key).text = str(int(round(value)))
        ET.ElementTree(root).write(folder / f"{rec.file.stem}.xml")


def write_coco(records: list[Record], classes: list[str], path: Path) -> None:
    """A COCO JSON: category ids 1..K in ``classes`` order, image ids 1..N, ``bbox = [x, y, w, h]``."""
    images, anns = [], []
    for i, rec in enumerate(records, start=1):
        images.append({"id": i, "file_name": rec.file.name, "width": rec.size[0], "height": rec.size[1]})
        for (x0, y0, x1, y1), name in zip(rec.boxes.tolist(), rec.names):
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": classes.index(name) + 1, "iscrowd": 0,
                         "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0)})
    cats = [{"id": k + 1, "name": n} for k, n in enumerate(classes)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))


def write_yolo(records: list[Record], classes: list[str], folder: Path) -> None:
    """``folder/<stem>.txt`` per record (``class cx cy w h``, normalised, 8 decimals) and ``classes.txt`` beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "classes.txt").write_text("\n".join(classes) + "\n")
    for rec in records:
        w, h = rec.size
        lines = [f"{classes.index(n)} {(x0 + x1) / 2 / w:.8f} {(y0 + y1) / 2 / h:.8f} {(x1 - x0) / w:.8f} "
                 f"{(y1 - y0) / h:.8f}" for (x0, y0, x1, y1), n in zip(rec.boxes.tolist(), rec.names)]
        (folder / f"{rec.file.stem}.txt").write_text("".join(line + "\n" for line in lines))
