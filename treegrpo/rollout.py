"""Rollouts: grow TreeGRPO trees level by level, or flat trajectories for the baselines.

The tree rollout expands all frontier nodes of all trees of an epoch together: one batched model
call per step (split only where `max_batch` says memory is short), with the cond and uncond halves
of CFG in the same call. The official code expands node by node at batch 1;
`rollout_tree_node_by_node` does that too, and serves as the reference the batched path is
tested against (same noises, same result) and as the benchmark's baseline.

Randomness comes in as explicit noise tensors, drawn by `draw_tree_noise` / `draw_flat_noise`
from a generator, so that any two rollouts given the same noises agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from treegrpo.models.base import Conditioning, ModelAdapter
from treegrpo.schedules import Schedule
from treegrpo.stepping import gaussian_log_prob
from treegrpo.tree import TreeShape


class Evaluator:
    """Guided model evaluations in chunks of at most `max_batch` rows, CFG halves included.

    With no cap, a call that runs out of GPU memory is retried in halves, and the smaller size
    is kept for later calls: as few calls as memory allows. Counts `calls` (forward
    invocations) and `evals` (states evaluated, before CFG doubling).
    """

    def __init__(
        self, adapter: ModelAdapter, schedule: Schedule, cfg_scale: float, max_batch: int = 0
    ) -> None:
        self.adapter = adapter
        self.schedule = schedule
        self.cfg_scale = cfg_scale
        rows_per_state = 1 if cfg_scale == 1.0 else 2
        self.states_per_call = max(1, max_batch // rows_per_state) if max_batch else 0
        self.calls = 0
        self.evals = 0

    def __call__(self, x: Tensor, step: int | Tensor, cond: Conditioning) -> Tensor:
        while True:
            chunk = self.states_per_call or x.shape[0]
            try:
                return self._chunked(x, step, cond, chunk)
            except torch.cuda.OutOfMemoryError:
                if chunk == 1:
                    raise
                torch.cuda.empty_cache()
                self.states_per_call = max(1, chunk // 2)

    def _chunked(self, x: Tensor, step: int | Tensor, cond: Conditioning, chunk: int) -> Tensor:
        outputs = []  # counted only once the whole batch succeeded (an OOM retry recounts)
        for start in range(0, x.shape[0], chunk):
            rows = torch.arange(start, min(start + chunk, x.shape[0]))
            step_rows = step if isinstance(step, int) else step[rows]
            outputs.append(
                self.adapter.predict(
                    x[rows], step_rows, self.schedule, cond.select(rows), self.cfg_scale
                )
            )
        self.calls += len(outputs)
        self.evals += x.shape[0]
        return torch.cat(outputs)


# ---------------------------------------------------------------------------------------------
# Trees


@dataclass
class TreeNoise:
    initial: Tensor  # (trees, C, H, W): the shared root noise of each tree
    window: list[Tensor]  # j = 0..d-1: (trees, k^(j+1), C, H, W) child noises at window level j

    @staticmethod
    def cat(parts: Sequence[TreeNoise]) -> TreeNoise:
        """Trees drawn separately (e.g. one generator per tree), stacked in order."""
        return TreeNoise(
            torch.cat([p.initial for p in parts]),
            [torch.cat(level) for level in zip(*(p.window for p in parts), strict=True)],
        )


def draw_tree_noise(
    trees: int, shape: TreeShape, latent_shape: Sequence[int], generator: torch.Generator
) -> TreeNoise:
    """All the randomness of `trees` trees, drawn on the CPU in a fixed order."""
    initial = torch.randn((trees, *latent_shape), generator=generator)
    window = [
        torch.randn((trees, shape.k ** (j + 1), *latent_shape), generator=generator)
        for j in range(shape.depth)
    ]
    return TreeNoise(initial, window)


@dataclass
class TreeRollout:
    """Result of growing trees. Step-indexed blocks: states[i] is (trees, width(i), C, H, W).

    `states` always holds the window steps s..s+d and the leaves (step T); with `record=True` it
    holds every step, and `x0` holds each state's predicted clean latent, for logged trees.
    """

    shape: TreeShape
    prompts: list[str]
    states: dict[int, Tensor]
    log_probs: dict[int, Tensor]  # step s+1..s+d -> (trees, width): log p_old of the edge in
    x0: dict[int, Tensor] = field(default_factory=dict)
    model_calls: int = 0
    model_evals: int = 0

    @property
    def trees(self) -> int:
        return len(self.prompts)

    @property
    def leaves(self) -> Tensor:
        """(trees, k^d, C, H, W) final latents."""
        return self.states[self.shape.steps]

    @staticmethod
    def cat(parts: Sequence[TreeRollout]) -> TreeRollout:
        """Trees grown in chunks (same shape), stacked in order as one rollout."""
        if len(parts) == 1:
            return parts[0]

        def blocks(attr: str) -> dict[int, Tensor]:
            first: dict[int, Tensor] = getattr(parts[0], attr)
            return {key: torch.cat([getattr(p, attr)[key] for p in parts]) for key in first}

        return TreeRollout(
            parts[0].shape,
            [prompt for p in parts for prompt in p.prompts],
            blocks("states"),
            blocks("log_probs"),
            blocks("x0"),
            sum(p.model_calls for p in parts),
            sum(p.model_evals for p in parts),
        )


def _flat(block: Tensor) -> Tensor:
    return block.reshape(-1, *block.shape[2:])  # (trees * width, C, H, W)


def rollout_trees(
    adapter: ModelAdapter,
    schedule: Schedule,
    prompts: Sequence[str],
    cond: Conditioning,
    shape: TreeShape,
    noise: TreeNoise,
    cfg_scale: float,
    eta: float,
    max_batch: int = 0,
    record: bool = False,
) -> TreeRollout:
    """Grow one tree per prompt, all trees together, one (chunked) model call per step."""
    trees, k = len(prompts), shape.k
    evaluator = Evaluator(adapter, schedule, cfg_scale, max_batch)
    device = adapter.device
    x = noise.initial.to(device)[:, None]  # (trees, 1, C, H, W)
    states: dict[int, Tensor] = {0: x}
    log_probs: dict[int, Tensor] = {}
    x0: dict[int, Tensor] = {}
    tree_of_row = torch.arange(trees)
    for step in range(shape.steps):
        width = x.shape[1]
        rows = _flat(x)  # (trees * width, C, H, W)
        out = evaluator(rows, step, cond.select(tree_of_row.repeat_interleave(width)))
        if record:
            x0[step] = schedule.predicted_x0(rows, out, step).reshape(x.shape)
        if shape.is_sde_step(step):
            mean, std = schedule.gaussian(rows, out, step, eta)  # (trees * width, C, H, W)
            child_noise = noise.window[step - shape.window_start].to(device)
            child_noise = child_noise.reshape(trees * width, k, *x.shape[2:])
            children = mean[:, None] + std[:, None] * child_noise  # (trees * width, k, C, H, W)
            edge_log_prob = gaussian_log_prob(children, mean[:, None], std[:, None], batch_dims=2)
            x = children.reshape(trees, width * k, *x.shape[2:])
            log_probs[step + 1] = edge_log_prob.reshape(trees, width * k)
        else:
            x = schedule.ode(rows, out, step).reshape(x.shape)
        if record or shape.window_start <= step + 1 <= shape.window_end:
            states[step + 1] = x
    states[shape.steps] = x
    if record:
        x0[shape.steps] = x
    return TreeRollout(
        shape=shape,
        prompts=list(prompts),
        states=states,
        log_probs=log_probs,
        x0=x0,
        model_calls=evaluator.calls,
        model_evals=evaluator.evals,
    )


def rollout_tree_node_by_node(
    adapter: ModelAdapter,
    schedule: Schedule,
    prompts: Sequence[str],
    cond: Conditioning,
    shape: TreeShape,
    noise: TreeNoise,
    cfg_scale: float,
    eta: float,
) -> TreeRollout:
    """Reference rollout: depth-first, one node per model call, as the official code expands.

    Slow by design; it exists to pin the batched rollout and as the benchmark's baseline.
    """
    evaluator = Evaluator(adapter, schedule, cfg_scale)
    device = adapter.device
    trees, k = len(prompts), shape.k
    kept_steps = [*range(shape.window_start, shape.window_end + 1), shape.steps]
    found: dict[int, dict[tuple[int, int], Tensor]] = {step: {} for step in kept_steps}
    log_probs = {
        step: torch.zeros(trees, shape.width(step), device=device)
        for step in range(shape.window_start + 1, shape.window_end + 1)
    }
    for tree in range(trees):
        tree_cond = cond.select(torch.tensor([tree]))
        # Depth-first: a stack of (state (1, C, H, W), step, node index at that step).
        stack = [(noise.initial[tree : tree + 1].to(device), 0, 0)]
        while stack:
            x, step, node = stack.pop()
            if step in found:
                found[step][(tree, node)] = x[0]
            if step == shape.steps:
                continue
            out = evaluator(x, step, tree_cond)  # (1, C, H, W)
            if not shape.is_sde_step(step):
                stack.append((schedule.ode(x, out, step), step + 1, node))
                continue
            mean, std = schedule.gaussian(x, out, step, eta)
            level = step - shape.window_start
            for c in reversed(range(k)):
                child_index = node * k + c
                child = mean + std * noise.window[level][tree, child_index].to(device)[None]
                log_probs[step + 1][tree, child_index] = gaussian_log_prob(child, mean, std)[0]
                stack.append((child, step + 1, child_index))

    states = {
        step: torch.stack(
            [
                torch.stack([found[step][(tree, n)] for n in range(shape.width(step))])
                for tree in range(trees)
            ]
        )  # (trees, width, C, H, W)
        for step in kept_steps
    }
    return TreeRollout(
        shape=shape,
        prompts=list(prompts),
        states=states,
        log_probs=log_probs,
        model_calls=evaluator.calls,
        model_evals=evaluator.evals,
    )


# ---------------------------------------------------------------------------------------------
# Flat trajectories (DanceGRPO / Flow-GRPO / MixGRPO)


@dataclass
class FlatNoise:
    initial: Tensor  # (prompts * G, C, H, W): each trajectory's start (equal within a group
    #                  when drawn with same_noise)
    steps: Tensor  # (prompts * G, T, C, H, W): per-trajectory step noise

    @staticmethod
    def cat(parts: Sequence[FlatNoise]) -> FlatNoise:
        """Groups drawn separately (e.g. one generator per prompt), stacked in order."""
        return FlatNoise(torch.cat([p.initial for p in parts]), torch.cat([p.steps for p in parts]))


def draw_flat_noise(
    prompts: int,
    group_size: int,
    steps: int,
    latent_shape: Sequence[int],
    generator: torch.Generator,
    same_noise: bool = True,
) -> FlatNoise:
    """Initial and step noise of `prompts` groups of G trajectories. `same_noise`: one initial
    noise per group (DanceGRPO's init_same_noise, Flow-GRPO's same_latent), else one per
    trajectory."""
    starts = prompts if same_noise else prompts * group_size
    initial = torch.randn((starts, *latent_shape), generator=generator)
    if same_noise:
        initial = initial.repeat_interleave(group_size, dim=0)  # (prompts * G, C, H, W)
    step_noise = torch.randn((prompts * group_size, steps, *latent_shape), generator=generator)
    return FlatNoise(initial, step_noise)


@dataclass
class FlatRollout:
    """G trajectories per prompt. Row r belongs to prompt r // G."""

    prompts: list[str]
    group_size: int
    sde_steps: Tensor  # (T,) bool: which steps were stochastic
    states: Tensor  # (prompts * G, T + 1, C, H, W)
    log_probs: Tensor  # (prompts * G, T): log p_old of each step; NaN at ODE steps
    last_x0: Tensor  # (prompts * G, C, H, W): the model's clean estimate at the last step
    model_calls: int = 0
    model_evals: int = 0

    @property
    def leaves(self) -> Tensor:
        return self.states[:, -1]  # (prompts * G, C, H, W)


def rollout_flat(
    adapter: ModelAdapter,
    schedule: Schedule,
    prompts: Sequence[str],
    cond: Conditioning,
    group_size: int,
    sde_steps: Tensor,
    noise: FlatNoise,
    cfg_scale: float,
    eta: float,
    max_batch: int = 0,
) -> FlatRollout:
    """All trajectories of all prompts step together; SDE where `sde_steps`, ODE elsewhere."""
    evaluator = Evaluator(adapter, schedule, cfg_scale, max_batch)
    device = adapter.device
    rows = len(prompts) * group_size
    prompt_of_row = torch.arange(len(prompts)).repeat_interleave(group_size)
    row_cond = cond.select(prompt_of_row)
    x = noise.initial.to(device)  # (rows, C, H, W)
    if x.shape[0] != rows:
        raise ValueError(f"{x.shape[0]} initial noises for {rows} trajectories")
    states = [x]
    log_probs = torch.full((rows, schedule.steps), float("nan"), device=device)
    last_x0 = x
    for step in range(schedule.steps):
        out = evaluator(x, step, row_cond)
        if step == schedule.steps - 1:
            last_x0 = schedule.predicted_x0(x, out, step)
        if bool(sde_steps[step]):
            mean, std = schedule.gaussian(x, out, step, eta)
            x = mean + std * noise.steps[:, step].to(device)
            log_probs[:, step] = gaussian_log_prob(x, mean, std)
        else:
            x = schedule.ode(x, out, step)
        states.append(x)
    return FlatRollout(
        prompts=list(prompts),
        group_size=group_size,
        sde_steps=sde_steps.clone(),
        states=torch.stack(states, dim=1),  # (rows, T + 1, C, H, W)
        log_probs=log_probs,
        last_x0=last_x0,
        model_calls=evaluator.calls,
        model_evals=evaluator.evals,
    )


@torch.no_grad()
def sample_ode(
    adapter: ModelAdapter,
    schedule: Schedule,
    cond: Conditioning,
    initial: Tensor,
    cfg_scale: float,
    max_batch: int = 0,
) -> Tensor:
    """Deterministic samples (galleries, evaluation): (B, C, H, W) clean latents."""
    evaluator = Evaluator(adapter, schedule, cfg_scale, max_batch)
    x = initial.to(adapter.device)
    for step in range(schedule.steps):
        x = schedule.ode(x, evaluator(x, step, cond), step)
    return x
