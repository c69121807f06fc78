"""treegrpo/shares.py: a run's gradient layout, kept across resumes, and the pieces one process
uses to sum a minibatch's gradient as the run's ranks did. The end-to-end property (a 2-rank
checkpoint resumed on one process is bit-equal to the uninterrupted run) is tested in
test_sharding.py (FSDP) and test_distributed.py (replicated); the norm against DTensor's own,
bit for bit, in test_sharding.py's reduction script."""

from __future__ import annotations

import torch

from treegrpo.shares import (
    Layout,
    add_gradients,
    resumed_layout,
    run_layout,
    sharded_total_norm,
    share_members,
)


def test_a_run_layout_counts_its_ranks_and_its_shard_group() -> None:
    assert run_layout(1, sharded=False) == Layout(1, 0)
    assert run_layout(2, sharded=False) == Layout(2, 0)
    assert run_layout(2, sharded=True) == Layout(2, 2)
    # HSDP: 2 machines of 4 ranks shard within each machine.
    assert run_layout(8, sharded=True, replicas=2) == Layout(8, 4)
    # fsdp on one process trains a plain module: nothing is sharded.
    assert run_layout(1, sharded=True) == Layout(1, 0)
    assert not Layout(2, 0).sharded and Layout(2, 2).sharded


def test_one_process_keeps_the_layout_it_resumes_and_more_processes_take_their_own() -> None:
    saved, started_one, started_two = Layout(2, 2), Layout(1, 0), Layout(2, 2)
    assert resumed_layout(saved, 1, 8, started_one) == saved
    assert resumed_layout(saved, 2, 8, started_two) == started_two
    four = Layout(4, 4)
    assert resumed_layout(four, 2, 8, started_two) == started_two  # 2 ranks: their own order
    # Prompts that no longer split into the saved shares (prompts_per_epoch changed): own layout.
    assert resumed_layout(Layout(3, 0), 1, 8, started_one) == started_one
    # A checkpoint from before layouts were recorded reads as one share.
    assert resumed_layout(Layout(), 1, 8, started_one) == started_one


def test_a_share_holds_the_minibatch_members_of_its_block_in_minibatch_order() -> None:
    minibatch = torch.tensor([7, 2, 9, 4, 0, 11])
    # 12 edges in 2 shares of 6: share 0 holds edges 0..5, share 1 edges 6..11.
    assert share_members(minibatch, 0, 6).tolist() == [2, 4, 0]
    assert share_members(minibatch, 1, 6).tolist() == [7, 9, 11]
    assert share_members(torch.tensor([8, 9]), 0, 6).tolist() == []


def test_gradients_add_parameter_by_parameter_and_none_is_not_reached_yet() -> None:
    one, two = torch.tensor([1.0, 2.0]), torch.tensor([0.5, -1.0])
    total = add_gradients([None, one, None], [two, two, None])
    assert total[0] is two and total[2] is None
    assert total[1] is not None and total[1].tolist() == [1.5, 1.0]


def test_the_sharded_norm_takes_each_parameter_from_its_shards() -> None:
    # Parameter a = [[3], [4]] cut over 2 shards: rows [3] and [4], norms 3 and 4,
    # (3^2 + 4^2)^0.5 = 5. Parameter b = [12] has one row: shard 0 holds it, shard 1 nothing,
    # (12^2 + 0)^0.5 = 12. Over parameters: (5^2 + 12^2)^0.5 = 13.
    a, b = torch.tensor([[3.0], [4.0]]), torch.tensor([12.0])
    assert float(sharded_total_norm([a, b], 2)) == 13.0
    # One shard, or the plain norm over whole tensors, gives the same number here.
    assert float(sharded_total_norm([a, b], 1)) == 13.0
    assert float(torch.nn.utils.get_total_norm([a, b])) == 13.0
