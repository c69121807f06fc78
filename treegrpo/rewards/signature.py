"""What a reward is, as a type: `fn(images, prompts, metadata) -> scores` (registry.py says more).

Its own module so that reward modules and the registry (which imports them) share one spelling.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

# One mapping per image: its prompt's row metadata in the dataset ({} when there is none).
Metadata = Sequence[Mapping[str, Any]]
RewardFn = Callable[[Tensor, Sequence[str], Metadata], Tensor]
RewardFactory = Callable[[torch.device, Mapping[str, Any]], RewardFn]
