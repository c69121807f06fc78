"""Rewards: `name -> factory(device, options) -> fn(images, prompts, metadata) -> scores`.

This package's import is torch-free; `treegrpo.rewards.registry` holds the factories.
"""
