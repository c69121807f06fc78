"""treegrpo/config/grid.py: an experiment's axes expanded into named, grouped runs."""

from __future__ import annotations

import pytest

from treegrpo.config.grid import expand_grid
from treegrpo.errors import ConfigError


def test_presets_by_seeds_group_by_everything_but_the_seed() -> None:
    cells = expand_grid({"preset": ["digits-treegrpo", "digits-mixgrpo"], "seed": [0, 1]})
    assert [c.name for c in cells] == [
        "digits-treegrpo seed=0",
        "digits-treegrpo seed=1",
        "digits-mixgrpo seed=0",
        "digits-mixgrpo seed=1",
    ]
    assert [c.group for c in cells] == ["digits-treegrpo"] * 2 + ["digits-mixgrpo"] * 2
    assert cells[2].preset == "digits-mixgrpo"
    assert cells[2].overrides == {"seed": 0}  # the preset axis is not a setting


def test_setting_axes_are_overrides_on_the_base_preset() -> None:
    cells = expand_grid({"tree.k": [2, 4], "train.lr": [1e-4]}, base_preset="digits-treegrpo")
    assert [c.name for c in cells] == ["tree.k=2 train.lr=0.0001", "tree.k=4 train.lr=0.0001"]
    assert all(c.preset == "digits-treegrpo" and c.seed is None for c in cells)
    assert cells[1].overrides == {"tree.k": 4, "train.lr": 1e-4}


@pytest.mark.parametrize(
    ("axes", "field"),
    [
        ({}, "axes"),
        ({"tree.k": []}, "axes.tree.k"),
        ({"tree.k": 3}, "axes.tree.k"),
        ({"seed": [0, 0]}, "axes.seed"),
        ({"seed": ["a"]}, "axes.seed"),
        ({"seed": list(range(17)), "tree.k": list(range(2, 18))}, "axes"),  # 272 runs
    ],
)
def test_bad_axes_name_the_field(axes: dict, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        expand_grid(axes)
    assert err.value.field == field
