"""Dynamic batching: items of concurrent requests are scored together.

One asyncio task collects queued items into a batch until it holds `max_batch` items or the first
item has waited `max_wait` seconds, then scores the batch on one worker thread (the model lives on
one device, so batches run one at a time) and resolves each item's future. The pattern of model
servers such as Triton's dynamic batcher; the code is written here.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from rewardserve.codec import Item

# (items) -> one (score, error) per item; runs on the worker thread.
ScoreBatch = Callable[[list[Item]], list[tuple[float | None, str | None]]]


@dataclass
class Stats:
    requests: int = 0
    items: int = 0
    batches: int = 0
    largest_batch: int = 0
    item_errors: int = 0
    batch_sizes: list[int] = field(default_factory=list)  # the last 100

    def as_dict(self) -> dict[str, object]:
        return {
            "requests": self.requests,
            "items": self.items,
            "batches": self.batches,
            "largest_batch": self.largest_batch,
            "item_errors": self.item_errors,
            "recent_batch_sizes": self.batch_sizes[-100:],
        }


class Batcher:
    def __init__(self, score_batch: ScoreBatch, max_batch: int, max_wait: float) -> None:
        self.score_batch = score_batch
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.stats = Stats()
        self.queue: asyncio.Queue[tuple[Item, asyncio.Future[tuple[float | None, str | None]]]]
        self.queue = asyncio.Queue()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reward")
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def score(self, items: list[Item]) -> list[tuple[float | None, str | None]]:
        """Each item's (score, error), once the batches holding them are scored."""
        loop = asyncio.get_running_loop()
        self.stats.requests += 1
        self.stats.items += len(items)
        futures = []
        for item in items:
            future: asyncio.Future[tuple[float | None, str | None]] = loop.create_future()
            if item.error is not None:  # decoding already failed: not worth a model call
                future.set_result((None, item.error))
            else:
                self.queue.put_nowait((item, future))
            futures.append(future)
        results = list(await asyncio.gather(*futures))
        self.stats.item_errors += sum(error is not None for _, error in results)
        return results

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            deadline = time.monotonic() + self.max_wait
            while len(batch) < self.max_batch:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self.queue.get(), left))
                except TimeoutError:
                    break
            self.stats.batches += 1
            self.stats.largest_batch = max(self.stats.largest_batch, len(batch))
            self.stats.batch_sizes = [*self.stats.batch_sizes[-99:], len(batch)]
            items = [item for item, _ in batch]
            try:
                results = await loop.run_in_executor(self.executor, self.score_batch, items)
            except Exception as exc:  # score_batch isolates items; this is a last resort
                results = [(None, f"scoring failed: {type(exc).__name__}: {exc}")] * len(items)
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
