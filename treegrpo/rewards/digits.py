"""Rewards for the digits model.

- `digit_judge`: the probability that an image shows the digit its prompt names, from an SVM
  trained on scikit-learn's 8 x 8 digits (about 99% held-out accuracy; trains in under a second,
  so no weights ship). 16 x 16 images are 2 x 2 average-pooled to 8 x 8 first.
- `boldness`: mean ink of the image, a style reward whose effect a gallery shows at a glance
  (thicker, brighter strokes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

import numpy as np
import torch
from torch import Tensor

from treegrpo.prompts import digit_of_prompt
from treegrpo.rewards.signature import Metadata


@cache
def digit_classifier() -> Any:
    """SVC(gamma=0.001) on all 1797 digits with Platt-style calibrated probabilities.

    Deterministic: the calibration folds are unshuffled. (SVC(probability=True) does the same
    internally but is deprecated in scikit-learn 1.9.)
    """
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.datasets import load_digits
    from sklearn.svm import SVC

    data = load_digits()
    classifier = CalibratedClassifierCV(SVC(gamma=0.001), ensemble=False, method="sigmoid")
    classifier.fit(data.data, data.target)
    return classifier


def to_judge_features(images: Tensor) -> np.ndarray:
    """(B, C, H, W) in [0, 1] -> (B, 64) in the 0..16 scale of the 8 x 8 training images."""
    grey = images.float().mean(dim=1, keepdim=True)  # (B, 1, H, W)
    pooled = torch.nn.functional.adaptive_avg_pool2d(grey, (8, 8))  # (B, 1, 8, 8)
    return (pooled.flatten(1) * 16.0).cpu().numpy().astype(np.float64)


def digit_probabilities(images: Tensor) -> Tensor:
    """(B, 10) class probabilities of the judge."""
    classifier = digit_classifier()
    probabilities = classifier.predict_proba(to_judge_features(images))  # (B, 10)
    return torch.tensor(probabilities, dtype=torch.float32)


def wanted_digit(prompt: str, row: Mapping[str, Any]) -> int:
    """The digit an image should show: its row's `digit` metadata (the digits dataset) when
    present, else the one digit its prompt names."""
    if "digit" in row:
        value = row["digit"]
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 9:
            raise ValueError(f"digit_judge: metadata digit {value!r} of {prompt!r} is not 0..9")
        return value
    digit = digit_of_prompt(prompt)
    if digit is None:
        raise ValueError(f"digit_judge: prompt {prompt!r} names no single digit")
    return digit


def digit_judge(images: Tensor, prompts: Sequence[str], metadata: Metadata = ()) -> Tensor:
    """P(the wanted digit) under the judge, per image."""
    rows = metadata if len(metadata) == len(prompts) else [{}] * len(prompts)
    digits = [wanted_digit(prompt, row) for prompt, row in zip(prompts, rows, strict=True)]
    probabilities = digit_probabilities(images)
    return probabilities[torch.arange(len(digits)), torch.tensor(digits)]


def boldness(images: Tensor, prompts: Sequence[str], metadata: Metadata = ()) -> Tensor:
    return images.float().mean(dim=(1, 2, 3)).cpu()
