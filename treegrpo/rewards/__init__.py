"""Rewards: `name -> factory(device) -> fn(images, prompts) -> scores`.

This package's import is torch-free; `treegrpo.rewards.registry` holds the factories.
"""
