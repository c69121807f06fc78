"""PPO-clipped loss, child aggregation, KL to the reference, ratio statistics, and the whole
per-edge objective `update.edge_loss` (docs/TREEGRPO.md §6)."""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch

from treegrpo.algorithms import resolve_for_model
from treegrpo.config import resolve_config
from treegrpo.edges import EdgeBatch
from treegrpo.losses import aggregate_children, kl_to_reference, ppo_clip_loss, ratio_stats
from treegrpo.models.tiny import TinyAdapter
from treegrpo.stepping import gaussian_log_prob
from treegrpo.update import edge_loss


def loss_of(log_ratio: float, advantage: float, clip_range: float = 0.2, adv_clip: float = 5.0):
    loss, ratio = ppo_clip_loss(
        torch.tensor([log_ratio]),
        torch.tensor([0.0]),
        torch.tensor([advantage]),
        clip_range,
        adv_clip,
    )
    return loss.item(), ratio.item()


def test_ratio_is_exp_of_log_prob_difference() -> None:
    # ratio = exp(-1.2 - (-1.3)) = exp(0.1) = 1.1051709
    _, ratio = ppo_clip_loss(
        torch.tensor([-1.2]), torch.tensor([-1.3]), torch.tensor([1.0]), 0.2, 5.0
    )
    assert ratio.item() == pytest.approx(1.1051709, abs=1e-6)


@pytest.mark.parametrize(
    ("log_ratio", "advantage", "expected"),
    [
        # A = +2, ratio exp(0.1) = 1.1051709 inside [0.8, 1.2]: -2 * 1.1051709 = -2.2103418
        (0.1, 2.0, -2.2103418),
        # A = +2, ratio exp(0.5) = 1.6487213 above 1.2: max(-3.2974425, -2 * 1.2 = -2.4) = -2.4
        (0.5, 2.0, -2.4),
        # A = +2, ratio exp(-0.5) = 0.6065307 below 0.8: max(-1.2130613, -2 * 0.8 = -1.6) = -1.2130613
        (-0.5, 2.0, -1.2130613),
        # A = -2, ratio exp(0.1) inside: 2 * 1.1051709 = 2.2103418
        (0.1, -2.0, 2.2103418),
        # A = -2, ratio exp(0.5) above: max(3.2974425, 2 * 1.2 = 2.4) = 3.2974425 (no clipping)
        (0.5, -2.0, 3.2974425),
        # A = -2, ratio exp(-0.5) below: max(1.2130613, 2 * 0.8 = 1.6) = 1.6
        (-0.5, -2.0, 1.6),
    ],
)
def test_ppo_clip_loss_literal(log_ratio: float, advantage: float, expected: float) -> None:
    loss, _ = loss_of(log_ratio, advantage)
    assert loss == pytest.approx(expected, abs=1e-6)


def test_ppo_clip_loss_gradient_vanishes_when_clipped() -> None:
    # A > 0 and ratio above 1 + eps: the clipped (constant) branch wins, so no gradient.
    log_prob = torch.tensor([0.5, 0.1], requires_grad=True)
    loss, _ = ppo_clip_loss(log_prob, torch.zeros(2), torch.tensor([2.0, 2.0]), 0.2, 5.0)
    loss.sum().backward()
    assert log_prob.grad is not None
    assert log_prob.grad[0].item() == 0.0
    # inside the range d(-A r)/d(log p) = -A r = -2 * 1.1051709
    assert log_prob.grad[1].item() == pytest.approx(-2.2103418, abs=1e-6)


def test_advantages_are_clamped_at_adv_clip() -> None:
    # ratio 1: loss = -clamp(A, -5, 5) -> A = 10 gives -5, A = -10 gives 5, A = 3 gives -3
    loss, _ = ppo_clip_loss(
        torch.zeros(3), torch.zeros(3), torch.tensor([10.0, -10.0, 3.0]), 0.2, 5.0
    )
    torch.testing.assert_close(loss, torch.tensor([-5.0, 5.0, -3.0]))
    # adv_clip 1 with ratio exp(0.1): -1 * 1.1051709
    assert loss_of(0.1, 4.0, adv_clip=1.0)[0] == pytest.approx(-1.1051709, abs=1e-6)


def test_aggregate_children_sum_and_mean() -> None:
    loss = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])  # (nodes, children)
    torch.testing.assert_close(aggregate_children(loss, "sum"), torch.tensor([6.0, 15.0]))
    torch.testing.assert_close(aggregate_children(loss, "mean"), torch.tensor([2.0, 5.0]))


def test_kl_to_reference_literal() -> None:
    # row 0: mu - mu_ref = (1, 2), dim-mean of squares (1 + 4) / 2 = 2.5, std 1 -> 2.5 / 2 = 1.25
    # row 1: mu - mu_ref = (3, 4), (9 + 16) / 2 = 12.5, std 2 -> 12.5 / (2 * 4) = 1.5625
    mean = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).reshape(2, 1, 1, 2)
    reference = torch.zeros(2, 1, 1, 2)
    std = torch.tensor([1.0, 2.0]).reshape(2, 1, 1, 1)
    kl = kl_to_reference(mean, reference, std)
    torch.testing.assert_close(kl, torch.tensor([1.25, 1.5625]))
    torch.testing.assert_close(kl_to_reference(mean, mean, std), torch.zeros(2))


def test_ratio_stats_literal() -> None:
    # log ratios (0, 0.1, -0.3, 0.3) -> ratios (1, 1.1051709, 0.7408182, 1.3498588)
    # |ratio - 1| > 0.2 for the last two -> clip fraction 2 / 4 = 0.5
    # approx KL = 0.5 * (0 + 0.01 + 0.09 + 0.09) / 4 = 0.02375
    # ratio mean = (1 + 1.1051709 + 0.7408182 + 1.3498588) / 4 = 1.0489620
    log_prob = torch.tensor([0.0, 0.1, -0.3, 0.3])
    old = torch.zeros(4)
    stats = ratio_stats(torch.exp(log_prob - old), log_prob, old, clip_range=0.2)
    assert stats["clip_fraction"] == pytest.approx(0.5)
    assert stats["approx_kl"] == pytest.approx(0.02375, abs=1e-7)
    assert stats["ratio_mean"] == pytest.approx(1.0489620, abs=1e-6)
    assert stats["ratio_min"] == pytest.approx(math.exp(-0.3), abs=1e-6)
    assert stats["ratio_max"] == pytest.approx(math.exp(0.3), abs=1e-6)
    assert all(isinstance(v, float) for v in stats.values())


def test_edge_loss_on_policy_is_minus_the_clamped_advantages_per_node() -> None:
    config = resolve_config("tiny-treegrpo", overrides={"train.adv_clip": 1.5})
    adapter = TinyAdapter("flow")
    config, schedule = resolve_for_model(config, adapter)
    sampling, train = config.sampling, config.train
    assert sampling.eta is not None
    generator = torch.Generator().manual_seed(0)
    parents = torch.randn((2, *adapter.latent_shape), generator=generator)
    steps, cond = torch.tensor([1, 2]), adapter.encode_prompts(["a", "b"])
    with torch.no_grad():  # the rollout's policy: 3 children per parent
        out = adapter.predict(parents, steps, schedule, cond, sampling.resolved_cfg_scale)
        mean, std = schedule.gaussian(parents, out, steps, sampling.eta)
        noise = torch.randn((2, 3, *adapter.latent_shape), generator=generator)
        children = mean[:, None] + std[:, None] * noise
        old = gaussian_log_prob(children, mean[:, None], std[:, None], batch_dims=2)
    advantages = torch.tensor([[2.0, -1.0, 0.5], [0.0, -3.0, 1.0]])
    batch = EdgeBatch(parents, steps, torch.arange(2), children, old, advantages, steps + 1)
    terms = edge_loss(adapter, schedule, batch, cond, sampling, train)
    # Ratio 1, so loss_e = -clamp(A, -1.5, 1.5): node 0 -(1.5 - 1 + 0.5), node 1 -(0 - 1.5 + 1).
    torch.testing.assert_close(terms.ratio, torch.ones(2, 3), rtol=0, atol=1e-5)
    torch.testing.assert_close(terms.per_parent, torch.tensor([-1.0, 0.5]), atol=1e-5, rtol=0)
    assert terms.kl is None and terms.per_parent.requires_grad
    mean_agg = dataclasses.replace(train, loss_agg="mean")
    terms = edge_loss(adapter, schedule, batch, cond, sampling, mean_agg)
    torch.testing.assert_close(terms.per_parent, torch.tensor([-1.0, 0.5]) / 3, atol=1e-5, rtol=0)
    # A reference equal to the policy: no KL.
    reference = copy.deepcopy(adapter.denoiser)
    terms = edge_loss(adapter, schedule, batch, cond, sampling, train, reference)
    assert terms.kl is not None
    torch.testing.assert_close(terms.kl, torch.zeros(2), rtol=0, atol=1e-8)
