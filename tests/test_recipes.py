"""The recipes behind the README's results rows: each one parses through train.py's own parser with every value it
sets, every search space in ``recipes/spaces/`` validates against its recipe's model, and every recipe the README
names exists."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from zoo.cli import main
from zoo.tune import load_space

REPO = Path(__file__).resolve().parents[1]
RECIPES = sorted((REPO / "recipes").glob("*.yaml"))
SPACES = sorted((REPO / "recipes" / "spaces").glob("*.yaml"))


def _printed_config(capsys: pytest.CaptureFixture[str], recipe: Path | None, *args: str) -> dict:
    """``train.py [-c recipe] [args] --print_config``: the configuration train.py would run, as a dict."""
    with pytest.raises(SystemExit) as exit_info:
        main([*(["-c", str(recipe)] if recipe else []), *args, "--print_config"])
    out, err = capsys.readouterr()
    assert exit_info.value.code in (0, None), err
    return yaml.safe_load(out)


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_every_recipe_parses_with_all_its_values(recipe: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wanted = yaml.safe_load(recipe.read_text())
    got = _printed_config(capsys, recipe)
    assert got["zoo"]["model"] == wanted["zoo"]["model"]
    assert got["seed_everything"] == wanted.get("seed_everything", 42)
    for section in ("model", "data", "trainer"):
        for key, value in (wanted.get(section) or {}).items():
            assert got[section][key] == value, f"{recipe.name}: {section}.{key}"


def test_cnn_mnist_recipe_is_the_cnn_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    """bench_threads and bench_debug time "the MNIST CNN" through this recipe; the README calls it the defaults."""
    recipe = _printed_config(capsys, REPO / "recipes" / "cnn_mnist.yaml")
    defaults = _printed_config(capsys, None, "--model", "cnn", "--data", "mnist")
    assert recipe["zoo"] == defaults["zoo"] and recipe["seed_everything"] == defaults["seed_everything"]
    assert recipe["model"] == defaults["model"] and recipe["data"] == defaults["data"]


@pytest.mark.parametrize("space", SPACES, ids=lambda p: p.stem)
def test_every_search_space_validates_against_its_recipe(space: Path) -> None:
    zoo = yaml.safe_load((REPO / "recipes" / space.name).read_text())["zoo"]
    assert set(load_space(str(space), zoo["model"], zoo["data"])) == set(yaml.safe_load(space.read_text()))


def test_a_misspelt_recipe_key_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text((REPO / "recipes" / "mf_ml100k.yaml").read_text().replace("  lr:", "  lrx:"))
    assert main(["-c", str(bad), "--print_config"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "'lrx'" in err


def test_every_recipe_the_readme_names_exists() -> None:
    named = set(re.findall(r"recipes/([\w-]+)\.yaml", (REPO / "README.md").read_text()))
    assert named, "the README names no recipe"
    assert sorted(named - {p.stem for p in RECIPES}) == []
