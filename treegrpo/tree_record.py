"""A logged tree as plain records: one entry per recorded state, with advantages attached.

Built from a recorded `TreeRollout` (see `rollout_trees(record=True)`), it is what `treegrpo
sample-tree` writes as tree.json and what the workers store as tree rows. Advantage rules:
- a leaf: its normalised reward;
- a node made by an SDE step: the advantage of the edge into it, as the backup defines it;
- the branch point of the first window step (state s): its backed-up value;
- every other node: none.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from treegrpo.models.base import ModelAdapter
from treegrpo.rollout import TreeRollout
from treegrpo.schedules import Schedule
from treegrpo.tree_scoring import decode_steps


@dataclass
class TreeNodeRecord:
    id: int
    parent_id: int | None
    step_index: int
    depth: int
    t: float
    sigma: float
    is_leaf: bool
    log_prob: float | None
    reward: float | None
    advantage: float | None
    rewards: dict[str, float] | None = None  # per named reward, leaves only
    image: Tensor | None = None  # (C, H, W) predicted clean image in [0, 1]
    latent: Tensor | None = None  # (C, H, W) the state itself, to branch again from this node

    def to_json(self, image_path: str | None) -> dict[str, Any]:
        return {
            "id": self.id,
            "parent_id": self.parent_id,
            "step_index": self.step_index,
            "depth": self.depth,
            "t": self.t,
            "sigma": self.sigma,
            "is_leaf": self.is_leaf,
            "log_prob": self.log_prob,
            "reward": self.reward,
            "rewards": self.rewards,
            "advantage": self.advantage,
            "image": image_path,
        }


@dataclass
class TreeRecord:
    index: int  # tree number within its epoch
    prompt: str
    k: int
    depth: int
    steps: int
    window_start: int
    backup: str
    nodes: list[TreeNodeRecord] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)  # model, seed, reward, epoch, ...


def build_tree_records(
    rollout: TreeRollout,
    schedule: Schedule,
    backup: str,
    leaf_rewards: dict[str, Tensor],
    reward_weights: dict[str, float],
    values: list[Tensor],
    images: dict[int, Tensor] | None = None,
) -> list[TreeRecord]:
    """One record per tree. `values[j]` (trees, k^j) are the backup's depth-j advantages,
    `leaf_rewards[name]` (trees, k^d) raw scores, `images[step]` (trees, width, C, H, W). Each
    node's latent is the rollout's state at its step, where the rollout kept it (every step of a
    recorded rollout)."""
    shape = rollout.shape
    offsets = [0]
    for step in range(shape.steps + 1):
        offsets.append(offsets[-1] + shape.width(step))
    records = []
    for tree in range(rollout.trees):
        nodes: list[TreeNodeRecord] = []
        for step in range(shape.steps + 1):
            block = rollout.states.get(step)  # (trees, width, C, H, W), if the rollout kept it
            for node in range(shape.width(step)):
                depth = shape.depth_at(step)
                is_leaf = step == shape.steps
                made_by_sde = shape.window_start < step <= shape.window_end
                log_prob = float(rollout.log_probs[step][tree, node]) if made_by_sde else None
                if is_leaf:
                    advantage: float | None = float(values[shape.depth][tree, node])
                elif made_by_sde:
                    advantage = float(values[depth][tree, node])
                elif step == shape.window_start:
                    advantage = float(values[0][tree, 0])
                else:
                    advantage = None
                per_reward = (
                    {name: float(r[tree, node]) for name, r in leaf_rewards.items()}
                    if is_leaf
                    else None
                )
                reward = (
                    sum(reward_weights[name] * value for name, value in per_reward.items())
                    if per_reward is not None
                    else None
                )
                nodes.append(
                    TreeNodeRecord(
                        id=offsets[step] + node,
                        parent_id=offsets[step - 1] + shape.parent(step, node) if step else None,
                        step_index=step,
                        depth=depth,
                        t=float(schedule.t[step]),
                        sigma=float(schedule.sigma[step]),
                        is_leaf=is_leaf,
                        log_prob=log_prob,
                        reward=reward,
                        advantage=advantage,
                        rewards=per_reward,
                        image=images[step][tree, node] if images is not None else None,
                        latent=block[tree, node] if block is not None else None,
                    )
                )
        records.append(
            TreeRecord(
                index=tree,
                prompt=rollout.prompts[tree],
                k=shape.k,
                depth=shape.depth,
                steps=shape.steps,
                window_start=shape.window_start,
                backup=backup,
                nodes=nodes,
            )
        )
    return records


def epoch_tree_records(
    adapter: ModelAdapter,
    schedule: Schedule,
    rollout: TreeRollout,
    backup: str,
    rewards: dict[str, Tensor],
    weights: dict[str, float],
    values: list[Tensor],
    first_tree: int,
) -> list[TreeRecord]:
    """The records of a recorded training rollout's trees, numbered from `first_tree` (their
    place in the epoch), each node with its predicted clean image. `rewards[name]` holds the
    leaves' scores tree after tree (trees * k^d,), `values` the backup's advantages."""
    images = {step: block.cpu() for step, block in decode_steps(adapter, rollout.x0).items()}
    leaf_rewards = {name: r.reshape(rollout.trees, -1) for name, r in rewards.items()}
    records = build_tree_records(rollout, schedule, backup, leaf_rewards, weights, values, images)
    for record in records:
        record.index += first_tree
    return records
