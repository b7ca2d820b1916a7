"""The shared deadline timer (trio_ws/_timer.py)."""

from __future__ import annotations

from collections.abc import Callable

import trio
import trio.testing

from trio_ws._trio._timer import Timer


async def test_callbacks_run_in_deadline_order_and_reschedule(
    autojump_clock: trio.testing.MockClock,
) -> None:
    timer = Timer()
    calls: list[tuple[str, float]] = []

    def every(name: str, period: float, times: int) -> Callable[[float], float | None]:
        left = times

        def callback(now: float) -> float | None:
            nonlocal left
            calls.append((name, now))
            left -= 1
            return now + period if left else None

        return callback

    async with trio.open_nursery() as nursery:
        nursery.start_soon(timer.run)
        await trio.testing.wait_all_tasks_blocked()
        start = trio.current_time()
        timer.schedule(start + 3, every("slow", 3, 2))
        timer.schedule(start + 1, every("fast", 1, 3))
        await trio.sleep(10)  # the behaviour under test (autojump_clock: no real time passes)
        assert len(timer) == 0  # nothing left once callbacks return None
        nursery.cancel_scope.cancel()
    assert [(name, round(at - start)) for name, at in calls] == [
        ("fast", 1),
        ("fast", 2),
        ("slow", 3),
        ("fast", 3),
        ("slow", 6),
    ]


async def test_an_earlier_deadline_wakes_a_sleeping_timer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    timer = Timer()
    fired = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(timer.run)
        timer.schedule(trio.current_time() + 100, lambda now: None)
        await trio.testing.wait_all_tasks_blocked()  # asleep until +100
        start = trio.current_time()
        timer.schedule(start + 1, lambda now: fired.set())
        await fired.wait()
        assert trio.current_time() - start == 1
        nursery.cancel_scope.cancel()
