"""The reward names the config accepts. Torch-free; must match `registry.REWARDS`."""

REWARD_NAMES: tuple[str, ...] = ("brightness", "contrast")
