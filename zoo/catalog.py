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
import importlib.util
import re
import textwrap
from pathlib import Path
from typing import Any, NamedTuple

from zoo.errors import ZooUserError
from zoo.registry import DATAMODULES, MODELS, Entry, ModelEntry, get_datamodule_entry, get_model_entry

MODELS_DIR = Path(__file__).parent / "models"
DATAMODULES_DIR = Path(__file__).parent / "datamodules"


def _first_sentence(doc: str) -> str:
    paragraph = " ".join(doc.strip().split("\n\n")[0].split())
    return paragraph.split(". ")[0].rstrip(".") + "."


@functools.lru_cache(maxsize=None)
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _module_file(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ZooUserError(f"registered module '{module}' cannot be found; check the registry entry's target")
    return Path(spec.origin)


def _describe(entry: Entry) -> dict[str, Any]:
    node = _class_node(entry.module, entry.class_name)
    described = {"name": entry.name, "aliases": entry.aliases, "defaults": dict(entry.defaults),
                 "class": entry.class_name, "module": entry.module,
                 "summary": _first_sentence(ast.get_docstring(node) or entry.class_name)}
    return described | ({"datamodule": entry.datamodule} if isinstance(entry, ModelEntry) else {})


def scan_models() -> list[dict[str, Any]]:
    """The registered models, sorted by name (name, aliases, datamodule, defaults, class, module, summary)."""
    return [_describe(MODELS[name]) for name in sorted(MODELS)]


def scan_datamodules() -> list[dict[str, Any]]:
    """The registered DataModules (name, aliases, class, module, summary)."""
    return [_describe(DATAMODULES[name]) for name in sorted(DATAMODULES)]


def paired_files(entry: dict[str, Any]) -> str:
    """Where a model and its default DataModule live: ``models/<file>.py + datamodules/<file>.py``, the pairing
    the registry declares (data files are named by data family: one of them serves several models)."""
    data = DATAMODULES.get(entry.get("datamodule", ""))
    model_file = entry["module"].rsplit(".", 1)[-1]
    return f"{model_file}.py + {data.module.rsplit('.', 1)[-1]}.py" if data else f"{model_file}.py"


def format_listing(entries: list[dict[str, Any]]) -> str:
    """A table of models with aliases, default data, the model and data files and a one-line summary."""
    rows = [("model", "aliases", "default data", "files (models/ + datamodules/)", "summary")]
    rows += [(e["name"], ",".join(e["aliases"]) or "-", e.get("datamodule", "-"), paired_files(e), e["summary"])
             for e in entries]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    table = "\n".join("  ".join(f"{cell:<{width}}" for cell, width in zip(r[:4], widths)) + f"  {r[4]}"
                       for r in rows)
    return table + "\n\ndata (--data NAME): " + ", ".join(sorted(DATAMODULES))


def check_model_name(name: str) -> None:
    """Fail fast (before torch is imported) on a model name that is neither registered nor an alias."""
    get_model_entry(name)


def _linked(data_entry: dict[str, Any], model_params: set[str]) -> set[str]:
    return set(class_attribute(data_entry["class"], "link_fields", data_entry["module"]) or ()) & model_params


def check_data_fits(model: str, data: str) -> None:
    """Refuse (before torch is imported) a DataModule that provides less than half of what the model takes from
    its data (the fields its default DataModule links into it: ``num_classes``, ``in_channels``, ...). The
    rest keep the model's defaults (``resnet`` on ``mnist`` keeps ``task=multiclass``)."""
    entry, chosen = _describe(get_model_entry(model)), _describe(get_datamodule_entry(data))
    data_entries = scan_datamodules()
    params = {p.name for p in init_params(entry["class"], entry["module"])}
    needed = _linked(_describe(get_datamodule_entry(entry["datamodule"])), params)

    def fits(e: dict[str, Any]) -> bool:  # at least half of what the model takes from its default data
        return 2 * len(needed & _linked(e, params)) >= len(needed)

    if needed and not fits(chosen):
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
    """Every class defined at the top of a zoo model or DataModule file (base classes are looked up here)."""
    return {node.name: node for folder in (MODELS_DIR, DATAMODULES_DIR) for path in sorted(folder.glob("*.py"))
            for node in _tree(path).body if isinstance(node, ast.ClassDef)}


def _class_node(module: str, class_name: str) -> ast.ClassDef:
    for node in _tree(_module_file(module)).body:
        if isinstance(node, ast.ClassDef) and node.name == class_name:
            return node
    raise ZooUserError(f"registered class '{module}:{class_name}' is not defined in {module}; fix the registry entry")


def _arg_docs(node: ast.ClassDef) -> dict[str, str]:
    """``name: text`` entries of the class docstring's ``Args:`` section (``a / b: text`` documents both)."""
    docs: dict[str, str] = {}
    doc = ast.get_docstring(node) or ""
    header = re.search(r"^(Args|Arguments|Parameters)\b[^\n]*:$", doc, flags=re.M)
    names: list[str] = []
    for line in (doc[header.end():] if header else "").splitlines():
        entry = re.match(r"^ {4}([\w /]+):\s*(.*)$", line)
        if entry:
            names = [n.strip() for n in entry.group(1).split("/")]
            docs.update({n: entry.group(2).strip() for n in names})
        elif line.startswith("        ") and names:
            docs.update({n: f"{docs[n]} {line.strip()}" for n in names})
        elif line.strip():
            break
    return docs


@functools.lru_cache(maxsize=None)
def _type_aliases() -> dict[str, str]:
    """Module-level ``Name = Literal[...]`` (or any type) aliases in the zoo's files, so help prints the values."""
    aliases: dict[str, str] = {}
    for folder in (MODELS_DIR, DATAMODULES_DIR):
        for path in sorted(folder.glob("*.py")):
            for node in _tree(path).body:
                if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                        and isinstance(node.value, ast.Subscript)
                        and getattr(node.value.value, "id", "") in ("Literal", "Union", "Optional")):
                    aliases[node.targets[0].id] = ast.unparse(node.value)
    return aliases


def _annotation(node: ast.expr | None) -> str:
    if node is None:
        return ""
    aliases = _type_aliases()
    return re.sub(r"\b\w+\b", lambda m: aliases.get(m.group(0), m.group(0)), ast.unparse(node))


def _base_names(node: ast.ClassDef) -> list[str]:
    return [b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases]


def init_params(class_name: str, module: str | None = None) -> list[Param]:
    """The constructor arguments of a class (a zoo class, or ``module``'s), following ``**kwargs`` into its zoo
    base classes."""
    classes = _classes()
    node = _class_node(module, class_name) if module else classes[class_name]
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
    params = [Param(a.arg, _annotation(a.annotation), None if d is None else ast.unparse(d),
                    docs.get(a.arg, "")) for a, d in pairs]
    if init.args.kwarg is not None and bases:
        seen = {p.name for p in params}
        params += [p for p in init_params(bases[0]) if p.name not in seen]
    return params


def class_attribute(class_name: str, attribute: str, module: str | None = None) -> Any:
    """A literal class attribute (e.g. ``link_fields``), looked up through the zoo base classes."""
    classes = _classes()
    node = _class_node(module, class_name) if module else classes[class_name]
    for stmt in node.body:
        targets = (stmt.targets if isinstance(stmt, ast.Assign)
                   else [stmt.target] if isinstance(stmt, ast.AnnAssign) else [])
        if any(getattr(t, "id", None) == attribute for t in targets) and stmt.value is not None:
            return ast.literal_eval(stmt.value)
    bases = [b for b in _base_names(node) if b in classes]
    return class_attribute(bases[0], attribute) if bases else None


def _find(entries: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(e for e in entries if name == e["name"] or name in e["aliases"])


def entry_params(name: str, kind: str = "model") -> list[Param]:
    """The constructor arguments of a registered model (``kind="model"``) or DataModule (``"data"``)."""
    e = _describe(get_model_entry(name) if kind == "model" else get_datamodule_entry(name))
    return init_params(e["class"], e["module"])


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
    entry = _describe(get_model_entry(model))
    data_entry = _describe(get_datamodule_entry(data or entry["datamodule"]))
    linked = set(class_attribute(data_entry["class"], "link_fields", data_entry["module"]) or ())
    out = [f"{entry['name']}: {entry['summary']} ({entry['module']}.{entry['class']}; default data: "
           f"{entry['datamodule']})", "", "model hyperparameters:"]
    out += _param_lines(init_params(entry["class"], entry["module"]), "model", entry["defaults"], linked)
    out += ["", f"data hyperparameters (--data {data_entry['name']}: {data_entry['class']}):"]
    out += _param_lines(init_params(data_entry["class"], data_entry["module"]), "data", data_entry["defaults"], set())
    out += ["", "trainer: --trainer.<arg> takes any lightning.Trainer argument (e.g. --trainer.gradient_clip_val 1.0);",
            "`--help-full` prints LightningCLI's complete help (imports Lightning, several seconds);",
            "`--print_config` prints the resolved YAML config without training."]
    return "\n".join(out)
