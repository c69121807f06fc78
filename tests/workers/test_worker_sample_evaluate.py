"""Sample and evaluate jobs through a real worker, on both transports, from a trained policy.

A small tiny-random train job makes the checkpoint; a sample job grows two logged trees with it
(images and latents on disk, rows in the database), and an evaluate job scores that checkpoint on
held-out prompts with two rewards, writing a gallery and eval metrics at the checkpoint's epoch;
a playground job samples one prompt from the base model and from that checkpoint side by side.
"""

from __future__ import annotations

from worker_stack import TINY, Stack

from backend import crud
from backend.db import session_scope
from treegrpo.atlas import drawable

TRAIN = {**TINY, "epochs": 2}


def test_sample_and_evaluate_jobs_use_a_trained_checkpoint(stack: Stack) -> None:
    stack.start_worker("se")
    try:
        trained = stack.submit("train", preset="tiny-treegrpo", overrides=TRAIN)
        done = stack.wait_status(trained, ("succeeded", "failed"), timeout=120)
        assert done["status"] == "succeeded", stack.explain(trained)()
        assert done["checkpoint_path"], "the train job left no checkpoint"

        sample_params = {"source_job_id": trained, "trees": 2}
        sampled = stack.submit(
            "sample", preset="tiny-treegrpo", overrides=TINY, params=sample_params
        )
        evaluate_params = {"source_job_id": trained, "samples_per_prompt": 2}
        evaluated = stack.submit(
            "evaluate",
            preset="tiny-treegrpo",
            overrides={**TINY, "reward": {"brightness": 1.0, "contrast": 1.0}},
            params=evaluate_params,
        )
        play = {"prompt": "a red square", "seed": 3, "images": 3}
        played = stack.submit(
            "sample",
            preset="tiny-treegrpo",
            overrides=TINY,
            params={"source_job_id": trained, "playground": play},
        )
        for job_id in (sampled, evaluated, played):
            final = stack.wait_status(job_id, ("succeeded", "failed", "cancelled"), timeout=120)
            assert final["status"] == "succeeded", stack.explain(job_id)()
    finally:
        stack.stop_workers()

    with session_scope(stack.url) as session:
        trees, count = crud.list_trees(session, job_id=sampled)
        assert count == 2
        for summary in trees:
            tree = crud.get_tree(session, tree_id=summary["tree"].id)
            assert tree.epoch == 2  # grown with the checkpoint of epoch 2
            assert tree.meta["policy"]["job_id"] == trained
            leaves = [node for node in tree.nodes if node.is_leaf]
            assert len(leaves) == tree.k**tree.depth
            # Latents where a branch can start only: drawn nodes (treegrpo/atlas.py) but leaves.
            shown = drawable((n.id, n.parent_id, n.log_prob_old is not None) for n in tree.nodes)
            for node in tree.nodes:
                assert node.image_path and (stack.store / node.image_path).is_file()
                if node.id in shown and not node.is_leaf:
                    assert node.latent_path and (stack.store / node.latent_path).is_file()
                else:
                    assert node.latent_path is None
            assert all(leaf.reward is not None for leaf in leaves)

        samples, count = crud.list_samples(session, job_id=evaluated)
        prompts = {sample.prompt for sample in samples}
        assert count == 2 * len(prompts) > 0
        for sample in samples:
            assert sample.epoch == 2
            assert set(sample.rewards or {}) == {"brightness", "contrast"}
            assert (stack.store / sample.image_path).is_file()
        points = {m.name: m for m in crud.list_metrics(session, job_id=evaluated)}
        for name in ("eval/brightness_mean", "eval/contrast_mean", "eval/reward_mean"):
            assert points[name].step == 2, name
        brightness = [s.rewards["brightness"] for s in samples if s.rewards]
        mean = sum(brightness) / len(brightness)
        assert abs(points["eval/brightness_mean"].value - mean) < 1e-4

    with session_scope(stack.url) as session:
        assert crud.sample_epochs(session, job_id=played) == [0, 2]  # base, then the checkpoint
        samples, count = crud.list_samples(session, job_id=played)
        assert count == 2 * 3
        assert {sample.prompt for sample in samples} == {"a red square"}
        assert all(sample.reward is not None and sample.rewards for sample in samples)
        by_epoch = {
            epoch: sorted(s.image_path for s in samples if s.epoch == epoch) for epoch in (0, 2)
        }
    base = [(stack.store / path).read_bytes() for path in by_epoch[0]]
    tuned = [(stack.store / path).read_bytes() for path in by_epoch[2]]
    assert len(set(base)) == 3  # three noises, three images
    assert base != tuned  # the checkpoint's images are not the base model's
    assert "mean reward base:" in stack.log(played)
