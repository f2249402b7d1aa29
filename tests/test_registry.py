"""The one registry: a static name table that imports nothing, lazy classes, complete help, and a model of
one's own added with one file plus one registry entry."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import zoo
from zoo.catalog import format_model_help, init_params, scan_datamodules, scan_models
from zoo.cli import main
from zoo.registry import DATAMODULES, MODELS, get_datamodule_entry, get_model_entry

REPO = Path(__file__).resolve().parents[1]


def test_listing_imports_no_torch_and_classes_load_lazily() -> None:
    code = ("import sys, zoo, zoo.models, zoo.datamodules; names = zoo.list_models(); "
            "assert 'cnn' in names and 'GAN' in dir(zoo.models) and 'MNISTDataModule' in dir(zoo.datamodules); "
            "assert 'torch' not in sys.modules and not [m for m in sys.modules if m.startswith('zoo.models.')]; "
            "print('ok')")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "ok"
    from zoo.models import GAN  # the lazy export resolves to the class of the module it names

    assert GAN.__module__ == "zoo.models.gan"


def test_every_entry_points_at_its_class_and_the_lazy_export() -> None:
    import zoo.datamodules
    import zoo.models

    for table, package in ((MODELS, zoo.models), (DATAMODULES, zoo.datamodules)):
        for name, entry in table.items():
            assert entry.module.startswith(package.__name__ + "."), name
            assert getattr(package, entry.class_name) is entry.cls, name
            assert entry.class_name in package.__all__, name


@pytest.mark.parametrize("kind", ["model", "data"])
def test_help_documents_every_argument(kind: str) -> None:
    """`--model X --help` is complete: every constructor argument of every registered class has a description."""
    for e in scan_models() if kind == "model" else scan_datamodules():
        undocumented = [p.name for p in init_params(e["class"], e["module"]) if not p.doc]
        assert not undocumented, f"{e['module']}.{e['class']} ({e['name']}): {undocumented}"


def test_help_expands_type_aliases_and_reads_args_headers() -> None:
    text = format_model_help("vae")
    assert "--model.optimizer (Literal['sgd', 'adam', 'adamw'], default 'adamw')" in text  # the alias, spelled out
    assert "final weight of the KL term" in text  # an ``Args (beyond ...):`` header is read too


TOY = '''
"""A toy classifier living outside the zoo."""
import torch
from torch import nn

from zoo.models.base import ClassifierModule

__all__ = ["Toy"]


class Toy(ClassifierModule):
    """A linear classifier on flattened pixels.

    Args:
        num_classes / in_channels / image_size: filled in from the DataModule by the CLI.
        optimizer / lr / weight_decay / scheduler: the optimisation recipe (``ZooModule.configure_optimizers``).
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, image_size: int = 8, optimizer: str = "adam",
                 lr: float = 0.01, weight_decay: float = 0.0, scheduler: str = "none") -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size ** 2, num_classes))
        self.example_input_array = torch.zeros(2, in_channels, image_size, image_size)
        self._init_metrics(num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
'''


def test_a_model_of_ones_own_is_one_file_and_one_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture) -> None:
    from tests.test_every_model import test_fit_reload_predict_export

    (tmp_path / "toy_zoo_model.py").write_text(textwrap.dedent(TOY))
    monkeypatch.syspath_prepend(str(tmp_path))
    zoo.register_model("toy", "toy_zoo_model:Toy", datamodule="digits", aliases=("my_toy",))
    try:
        assert "toy" in zoo.list_models() and get_model_entry("my_toy").cls.__name__ == "Toy"
        assert main(["--model", "toy", "--help"]) == 0
        assert "--model.lr (float, default 0.01)" in capsys.readouterr().out
        test_fit_reload_predict_export("toy", tmp_path, capsys)
        with pytest.raises(ValueError, match="already registered"):
            zoo.register_model("cnn", "toy_zoo_model:Toy", datamodule="digits")
    finally:
        MODELS.pop("toy")


def test_datamodule_entries_resolve_aliases() -> None:
    assert get_datamodule_entry("fashionmnist").name == "fashion_mnist"
    assert get_model_entry("dcgan").name == "gan"


def test_each_models_default_data_provides_its_declared_interface() -> None:
    """What a model asks of its DataModule is a declared Protocol (zoo.datamodules.interfaces); every default
    DataModule provides it, and the models that declare none read nothing beyond the linked shapes."""
    from zoo.datamodules.interfaces import missing_members

    declared = 0
    for name, entry in MODELS.items():
        need = entry.cls.data_interface
        if need is not None:
            declared += 1
            assert missing_members(zoo.create_datamodule(entry.datamodule), need) == [], name
    assert declared >= 7


def test_a_datamodule_without_the_interface_is_refused_in_one_line(tmp_path: Path, capsys) -> None:
    code = main(["--model", "gan2d", "--data", "digits", "--max-epochs", "1", "--runs-dir", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "PointMixtureData: no" in err[0] and "use --data ring2d" in err[0], err


def test_the_readme_model_table_names_the_files_the_registry_pairs() -> None:
    from zoo.catalog import paired_files

    table = (REPO / "README.md").read_text().split("| model | aliases | default data | files")[1].split("\n\n")[0]
    for entry in scan_models():
        model_file, data_file = paired_files(entry).split(" + ")
        assert f"`{model_file}` + `{data_file}`" in table, entry["name"]
