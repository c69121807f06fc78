"""When a run logs. Torch-free: the API shows a job's next logging epochs with it.

The final epoch always logs a gallery, its trees and a checkpoint, whatever the *_every settings,
so a short run always shows its trained model. Stored gallery, tree and checkpoint epochs count
finished epochs (1..epochs; gallery 0 = the baseline before training): the trees of rollout e
(0-based, is_tree_epoch) are stored as epoch e + 1, so that trees and galleries logged "every N"
share the epochs N, 2N, ...
"""

from __future__ import annotations


def is_gallery_epoch(epoch: int, *, epochs: int, every: int) -> bool:
    return epoch == epochs or (every > 0 and epoch % every == 0)


def is_tree_epoch(epoch: int, *, epochs: int, every: int) -> bool:
    """Whether rollout `epoch` (0-based) logs its trees: the first (the base policy's), every
    `every`-th and the last. Stored as epoch + 1, they land on the galleries' epochs: with
    every = 10, trees 1, 10, 20, ... beside galleries 0, 10, 20, ... (rollouts 0, 10, 20 once
    stored them as 1, 11, 21)."""
    if epoch == epochs - 1:
        return True
    return every > 0 and (epoch == 0 or (epoch + 1) % every == 0)


def is_checkpoint_epoch(epoch: int, *, epochs: int, every: int) -> bool:
    return epoch == epochs or (every > 0 and epoch % every == 0)


def _next_multiple(start: int, every: int, last: int) -> int:
    """The smallest multiple of `every` >= start, or the final epoch `last` if sooner."""
    if every <= 0:
        return last
    return min(-(-start // every) * every, last)


def logging_schedule(
    *,
    epochs: int,
    epochs_done: int,
    sample_every: int,
    log_tree_every: int,
    checkpoint_every: int,
) -> dict[str, int | None]:
    """The next gallery, tree and checkpoint epochs still to come after `epochs_done` finished
    epochs (None when none is left), in the numbering of the stored rows."""
    done = max(0, epochs_done)
    gallery = _next_multiple(done + 1, sample_every, epochs) if done < epochs else None
    tree = (
        None
        if done >= epochs
        else 1
        if done == 0 and log_tree_every > 0
        else _next_multiple(done + 1, log_tree_every, epochs)
    )
    checkpoint = _next_multiple(done + 1, checkpoint_every, epochs) if done < epochs else None
    return {
        "next_gallery_epoch": gallery,
        "next_tree_epoch": tree,
        "next_checkpoint_epoch": checkpoint,
    }
