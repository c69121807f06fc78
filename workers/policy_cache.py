"""Loaded policies and reward models kept between jobs of the interactive lane's warm process
(workers/warm.py), dropped after `idle_seconds` unused. Off (every call loads afresh) in the
one-job runner.

The key of a policy is everything that decides its weights: model, device, dtype and the
checkpoint folder with its modification time (a checkpoint written again is loaded again).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_entries: dict[tuple[Any, ...], tuple[Any, float]] = {}
_idle_seconds: float | None = None  # None: caching is off


def enable(idle_seconds: float) -> None:
    global _idle_seconds
    _idle_seconds = idle_seconds


def enabled() -> bool:
    return _idle_seconds is not None


def evict_idle(now: float | None = None) -> int:
    """Drop entries unused for idle_seconds; returns how many went."""
    if _idle_seconds is None:
        return 0
    now = time.monotonic() if now is None else now
    with _lock:
        stale = [key for key, (_, used) in _entries.items() if now - used > _idle_seconds]
        for key in stale:
            del _entries[key]
    if stale:
        _free_device_memory()
    return len(stale)


def cached(key: tuple[Any, ...], load: Callable[[], T]) -> T:
    """`load()`'s value, kept under `key` while caching is on."""
    if _idle_seconds is None:
        return load()
    evict_idle()
    with _lock:
        hit = _entries.get(key)
        if hit is not None:
            _entries[key] = (hit[0], time.monotonic())
            return hit[0]
    value = load()
    with _lock:
        _entries[key] = (value, time.monotonic())
    return value


def checkpoint_key(checkpoint: Path | None) -> tuple[str, float]:
    if checkpoint is None:
        return ("", 0.0)
    marker = checkpoint / "model.safetensors"
    return (str(checkpoint.resolve()), marker.stat().st_mtime if marker.exists() else 0.0)


def size() -> int:
    with _lock:
        return len(_entries)


def _free_device_memory() -> None:
    import gc

    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # a cache that cannot be emptied only keeps memory a while longer
        pass
