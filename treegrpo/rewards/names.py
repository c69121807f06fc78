"""The reward names the config accepts. Torch-free; must match `registry.REWARDS`."""

REWARD_NAMES: tuple[str, ...] = (
    "brightness",
    "contrast",
    "digit_judge",
    "boldness",
    "jpeg_compressibility",
    "jpeg_incompressibility",
    "clipscore",
    "pickscore",
    "aesthetic",
    "hps",
    "remote",
    "ocr",
    "vlm_judge",
    "imagereward",
    "geneval",
)
