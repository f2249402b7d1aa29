"""Read the registrations and constructor signatures from source without importing torch, so
``--list`` and ``--model NAME --help`` answer in a fraction of a second.

The registry itself is filled by the ``@register_model`` decorators when ``zoo.models`` is
imported (which imports torch and Lightning, several seconds). Listing and help only need the
decorators' literal arguments and the ``__init__`` signatures, so this module reads them with :mod:`ast`
(a test checks both against the imported classes).

Example:
    >>> "cnn" in [e["name"] for e in scan_models()]
    True
"""
from __future__ import annotations

import ast
import functools
import re
import textwrap
from pathlib import Path
from typing import Any, NamedTuple

from zoo.errors import ZooUserError

MODELS_DIR = Path(__file__).parent / "models"
DATAMODULES_DIR = Path(__file__).parent / "datamodules"


def _first_sentence(doc: str) -> str:
    paragraph = " ".join(doc.strip().split("\n\n")[0].split())
    return paragraph.split(". ")[0].rstrip(".") + "."


def _decorator_args(node: ast.ClassDef, decorator: str = "register_model") -> list[dict[str, Any]]:
    """One entry per ``@decorator(...)`` on the class (a class may be registered under several names)."""
    entries = []
    for deco in node.decorator_list:
        if isinstance(deco, ast.Call) and getattr(deco.func, "id", getattr(deco.func, "attr", "")) == decorator:
            entry = {"name": ast.literal_eval(deco.args[0]), "aliases": (), "defaults": {}, "class": node.name,
                     "summary": _first_sentence(ast.get_docstring(node) or node.name)}
            for kw in deco.keywords:
                value = ast.literal_eval(kw.value)
                if kw.arg in ("datamodule", "aliases"):
                    entry[kw.arg] = tuple(value) if kw.arg == "aliases" else value
                else:
                    entry["defaults"][kw.arg] = value
            entries.append(entry)
    return entries


@functools.lru_cache(maxsize=None)
def _trees(folder: Path) -> tuple[tuple[Path, ast.Module], ...]:
    return tuple((path, ast.parse(path.read_text(), filename=str(path))) for path in sorted(folder.glob("*.py")))


def _scan(folder: Path, decorator: str) -> list[dict[str, Any]]:
    entries = []
    for path, tree in _trees(folder):
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                for entry in _decorator_args(node, decorator):
                    entries.append({**entry, "module": f"zoo.{folder.name}.{path.stem}"})
    return sorted(entries, key=lambda e: e["name"])


def scan_models(models_dir: Path = MODELS_DIR) -> list[dict[str, Any]]:
    """Registrations found in ``zoo/models/*.py``, sorted by name (name, aliases, datamodule, summary)."""
    return _scan(models_dir, "register_model")


def scan_datamodules(datamodules_dir: Path = DATAMODULES_DIR) -> list[dict[str, Any]]:
    """DataModule registrations found in ``zoo/datamodules/*.py`` (name, aliases, summary)."""
    return _scan(datamodules_dir, "register_datamodule")


def format_listing(entries: list[dict[str, Any]]) -> str:
    """A table of models with aliases, default data and a one-line summary."""
    rows = [("model", "aliases", "default data", "summary")]
    rows += [(e["name"], ",".join(e["aliases"]) or "-", e.get("datamodule", "-"), e["summary"]) for e in entries]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    table = "\n".join(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}" for r in rows)
    return table + "\n\ndata (--data NAME): " + ", ".join(e["name"] for e in scan_datamodules())


def check_model_name(name: str) -> None:
    """Fail fast (before torch is imported) on a model name that is neither registered nor an alias."""
    from zoo.registry import UnknownNameError, close_matches_message

    entries = scan_models()
    known = {e["name"] for e in entries} | {a for e in entries for a in e["aliases"]}
    if name not in known:
        raise UnknownNameError(close_matches_message(name, sorted(known), "model"))


def _linked(data_entry: dict[str, Any], model_params: set[str]) -> set[str]:
    return set(class_attribute(data_entry["class"], "link_fields") or ()) & model_params


def check_data_fits(model: str, data: str) -> None:
    """Refuse (before torch is imported) a DataModule that provides less than half of what the model takes from
    its data (the fields its default DataModule links into it: ``num_classes``, ``in_channels``, ...). The
    rest keep the model's defaults (``resnet`` on ``mnist`` keeps ``task=multiclass``)."""
    from zoo.registry import UnknownNameError, close_matches_message

    entry = _find(scan_models(), model)
    data_entries = scan_datamodules()
    known = sorted({e["name"] for e in data_entries} | {a for e in data_entries for a in e["aliases"]})
    if data not in known:
        raise UnknownNameError(close_matches_message(data, known, "datamodule"))
    params = {p.name for p in init_params(entry["class"])}
    needed = _linked(_find(data_entries, entry["datamodule"]), params)

    def fits(e: dict[str, Any]) -> bool:  # at least half of what the model takes from its default data
        return 2 * len(needed & _linked(e, params)) >= len(needed)

    if needed and not fits(_find(data_entries, data)):
        best = max(len(needed & _linked(e, params)) for e in data_entries)
        closest = [e["name"] for e in data_entries if len(needed & _linked(e, params)) == best]
        raise ZooUserError(f"data '{data}' does not fit model '{entry['name']}': it provides too little of "
                           f"{', '.join(sorted(needed))}; use one of: {', '.join(closest)}")


class Param(NamedTuple):
    """One constructor argument as written in the source: name, annotation, default (source text), doc."""

    name: str
    annotation: str
    default: str | None
    doc: str


@functools.lru_cache(maxsize=None)
def _classes() -> dict[str, ast.ClassDef]:
    return {node.name: node for folder in (MODELS_DIR, DATAMODULES_DIR) for _, tree in _trees(folder)
            for node in tree.body if isinstance(node, ast.ClassDef)}


def _arg_docs(node: ast.ClassDef) -> dict[str, str]:
    """``name: text`` entries of the class docstring's ``Args:`` section (``a / b: text`` documents both)."""
    docs: dict[str, str] = {}
    section = (ast.get_docstring(node) or "").partition("Args:")[2]
    names: list[str] = []
    for line in section.splitlines():
        entry = re.match(r"^ {4}([\w /]+):\s*(.*)$", line)
        if entry:
            names = [n.strip() for n in entry.group(1).split("/")]
            docs.update({n: entry.group(2).strip() for n in names})
        elif line.startswith("        ") and names:
            docs.update({n: f"{docs[n]} {line.strip()}" for n in names})
        elif line.strip():
            break
    return docs


def _base_names(node: ast.ClassDef) -> list[str]:
    return [b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases]


def init_params(class_name: str) -> list[Param]:
    """The constructor arguments of a zoo class, following ``**kwargs`` into its zoo base classes."""
    classes = _classes()
    node = classes[class_name]
    bases = [b for b in _base_names(node) if b in classes]
    docs = _arg_docs(node)
    base = bases[0] if bases else None
    while base is not None:  # arguments re-declared in a subclass keep their base class's documentation
        docs = {**_arg_docs(classes[base]), **docs}
        base = next((b for b in _base_names(classes[base]) if b in classes), None)
    init = next((f for f in node.body if isinstance(f, ast.FunctionDef) and f.name == "__init__"), None)
    if init is None:
        return init_params(bases[0]) if bases else []
    args = [*init.args.posonlyargs, *init.args.args][1:]
    defaults = [None] * (len(args) - len(init.args.defaults)) + list(init.args.defaults)
    pairs = [*zip(args, defaults), *zip(init.args.kwonlyargs, init.args.kw_defaults)]
    params = [Param(a.arg, ast.unparse(a.annotation) if a.annotation else "", None if d is None else ast.unparse(d),
                    docs.get(a.arg, "")) for a, d in pairs]
    if init.args.kwarg is not None and bases:
        seen = {p.name for p in params}
        params += [p for p in init_params(bases[0]) if p.name not in seen]
    return params


def class_attribute(class_name: str, attribute: str) -> Any:
    """A literal class attribute (e.g. ``link_fields``), looked up through the zoo base classes."""
    classes = _classes()
    node = classes[class_name]
    for stmt in node.body:
        targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target] if isinstance(stmt, ast.AnnAssign) else []
        if any(getattr(t, "id", None) == attribute for t in targets) and stmt.value is not None:
            return ast.literal_eval(stmt.value)
    bases = [b for b in _base_names(node) if b in classes]
    return class_attribute(bases[0], attribute) if bases else None


def _find(entries: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(e for e in entries if name == e["name"] or name in e["aliases"])


def _param_lines(params: list[Param], prefix: str, overrides: dict[str, Any], linked: set[str]) -> list[str]:
    """One line per argument; a doc shared by consecutive arguments (``a / b: text``) is printed once after them."""
    lines = []
    for i, p in enumerate(params):
        default = repr(overrides[p.name]) if p.name in overrides else p.default
        head = f"  --{prefix}.{p.name} ({p.annotation or 'Any'}" + ("" if default is None else f", default {default}")
        lines.append(head + (", from the data)" if p.name in linked else ")"))
        if p.doc and (i + 1 == len(params) or params[i + 1].doc != p.doc):
            lines += textwrap.wrap(p.doc, 96, initial_indent=" " * 6, subsequent_indent=" " * 6)
    return lines


def format_model_help(model: str, data: str | None = None) -> str:
    """``--model NAME --help``: the model's and its DataModule's hyperparameters with defaults and docs."""
    check_model_name(model)
    entry = _find(scan_models(), model)
    data_entries = scan_datamodules()
    data = data or entry["datamodule"]
    known = sorted({e["name"] for e in data_entries} | {a for e in data_entries for a in e["aliases"]})
    if data not in known:
        from zoo.registry import UnknownNameError, close_matches_message

        raise UnknownNameError(close_matches_message(data, known, "datamodule"))
    data_entry = _find(data_entries, data)
    linked = set(class_attribute(data_entry["class"], "link_fields") or ())
    out = [f"{entry['name']}: {entry['summary']} ({entry['module']}.{entry['class']}; default data: "
           f"{entry['datamodule']})", "", "model hyperparameters:"]
    out += _param_lines(init_params(entry["class"]), "model", entry["defaults"], linked)
    out += ["", f"data hyperparameters (--data {data_entry['name']}: {data_entry['class']}):"]
    out += _param_lines(init_params(data_entry["class"]), "data", data_entry["defaults"], set())
    out += ["", "trainer: --trainer.<arg> takes any lightning.Trainer argument (e.g. --trainer.gradient_clip_val 1.0);",
            "`--help-full` prints LightningCLI's complete help (imports Lightning, several seconds);",
            "`--print_config` prints the resolved YAML config without training."]
    return "\n".join(out)
