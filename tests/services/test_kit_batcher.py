"""MicroBatcher in-process: Triton-style delay, full batches go at once, bounded queue, whole requests."""

from __future__ import annotations

import asyncio

import pytest
from rewardflow_kit.batcher import MicroBatcher, ModelThread, QueueFull


def make(calls: list[list[str]], **kwargs: float) -> MicroBatcher[str, str]:
    def run_batch(items: list[str]) -> list[str]:
        calls.append(items)
        return [item.upper() for item in items]

    options = {"max_batch_size": 4, "max_queue_delay_s": 0.2, "max_queue_size": 8} | kwargs
    return MicroBatcher(run_batch, ModelThread(), **options)  # type: ignore[arg-type]


def test_lone_request_waits_for_the_queue_delay_then_runs() -> None:
    async def main() -> None:
        calls: list[list[str]] = []
        batcher = make(calls)
        batcher.start()
        timed = await batcher.submit("a", 1)
        await batcher.stop()
        assert timed.value == "A" and calls == [["a"]]
        # A lower bound only: the worker cannot run before the delay has passed, however busy the machine.
        assert timed.queue_s >= 0.18

    asyncio.run(main())


def test_full_batch_runs_without_waiting_for_the_delay() -> None:
    async def main() -> None:
        calls: list[list[str]] = []
        delay = 3600.0
        batcher = make(calls, max_queue_delay_s=delay)
        batcher.start()
        # wait_for is a hang guard (a batcher that waits for the delay would take an hour), not a speed.
        results = await asyncio.wait_for(asyncio.gather(*(batcher.submit(x, 2) for x in "ab")), 600)
        await batcher.stop()
        assert [r.value for r in results] == ["A", "B"] and calls == [["a", "b"]]
        assert all(r.queue_s < delay for r in results)

    asyncio.run(main())


def test_requests_are_never_split_and_batches_respect_the_limit() -> None:
    async def main() -> None:
        calls: list[list[str]] = []
        batcher = make(calls, max_queue_delay_s=0.05, max_queue_size=100)
        batcher.start()
        sizes = {"a": 3, "b": 3, "c": 1, "d": 4, "e": 2}
        results = await asyncio.gather(*(batcher.submit(k, n) for k, n in sizes.items()))
        await batcher.stop()
        assert [r.value for r in results] == [k.upper() for k in sizes]
        assert sorted(k for call in calls for k in call) == sorted(sizes)  # each request in exactly one call
        assert all(sum(sizes[k] for k in call) <= 4 for call in calls)
        assert ["a"] == calls[0]  # "b" did not fit next to "a": FIFO, no reordering

    asyncio.run(main())


def test_queue_is_bounded_in_images_and_oversize_requests_are_refused() -> None:
    async def main() -> None:
        batcher = make([], max_queue_delay_s=30.0, max_queue_size=4, max_batch_size=4)
        pending = asyncio.ensure_future(batcher.submit("a", 3))  # worker not started: it stays queued
        await asyncio.sleep(0)
        assert batcher.queued_items == 3
        with pytest.raises(QueueFull, match="max_queue_size 4"):
            await batcher.submit("b", 2)
        with pytest.raises(ValueError, match="max_batch_size 4"):
            await batcher.submit("c", 5)
        await batcher.stop()
        with pytest.raises(asyncio.CancelledError):  # stop() cancels what is still queued
            await pending

    asyncio.run(main())
