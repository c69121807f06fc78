"""The algorithm names a run may choose, and the SDE window each one keeps. Torch-free.

The API validates job configs with these, so this module imports nothing heavy; the registry in
`treegrpo/algorithms/__init__.py` asserts that it implements exactly these names. It is not
`treegrpo/algorithms/names.py` because importing that would first run the algorithms package's
`__init__`, which imports torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args

Algorithm = Literal["treegrpo", "dancegrpo", "flowgrpo", "mixgrpo"]
ALGORITHMS: tuple[str, ...] = get_args(Algorithm)


def tree_last_start(steps: int, depth: int) -> int:
    """The last start of a tree window of `depth` steps that leaves the last step out."""
    return steps - depth - 1


@dataclass(frozen=True)
class WindowRule:
    """An algorithm whose SDE runs over a window of steps instead of all of them."""

    width_setting: str  # the dotted setting that holds the window's width
    last_start: Callable[[int, int], int]  # (steps, width) -> the last valid start
    fit: str  # what "fits" means, for the error when no start is valid
    start_setting: str | None = None  # the dotted setting that places a fixed or shifted window


WINDOW_RULES: dict[str, WindowRule] = {
    # The window never covers the last step (paper Eq. 7: s = 0 .. T - d - 1): branching there
    # would only add noise that the clean leaf image does not show.
    "treegrpo": WindowRule(
        "tree.depth", tree_last_start, " before the last step", start_setting="tree.window_start"
    ),
    # MixGRPO's window runs over steps 0 .. T - 3 (the last two stay ODE) and narrows near the
    # end instead of refusing a width (treegrpo.windows.sliding_window).
    "mixgrpo": WindowRule(
        "flat.window", lambda steps, _width: steps - 3, " (MixGRPO needs at least 3 steps)"
    ),
}

assert set(WINDOW_RULES) <= set(ALGORITHMS)
