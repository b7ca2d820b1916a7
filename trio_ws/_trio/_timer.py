"""One timer for many connections: a heap of deadlines served by a single task.

Keepalive (RFC 6455 section 5.5.2: a ping "may serve as a keepalive") needs a deadline per
connection, not a task per connection: a server with 10,000 idle connections runs one task
here. Each entry is a callback that returns its next deadline (``None`` to stop).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable

import trio

__all__ = ["Timer"]

#: Called at its deadline with the current time; returns the next deadline or ``None``.
TimerCallback = Callable[[float], "float | None"]


class Timer:
    """Deadlines (Trio clock, seconds) served by one task: ``run()`` in a nursery."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, TimerCallback]] = []
        self._order = itertools.count()  # ties keep their order; callbacks never compare
        self._sleep: trio.CancelScope | None = None

    def __len__(self) -> int:
        return len(self._heap)

    def schedule(self, deadline: float, callback: TimerCallback) -> None:
        """Call ``callback(now)`` once ``deadline`` has passed."""
        heapq.heappush(self._heap, (deadline, next(self._order), callback))
        if self._sleep is not None and deadline < self._sleep.deadline:
            self._sleep.deadline = deadline

    async def run(self) -> None:
        """Serve the deadlines until cancelled."""
        heap = self._heap
        while True:
            with trio.CancelScope(deadline=heap[0][0] if heap else float("inf")) as sleep:
                self._sleep = sleep
                await trio.sleep_forever()
            self._sleep = None
            now = trio.current_time()
            while heap and heap[0][0] <= now:
                _, _, callback = heapq.heappop(heap)
                following = callback(now)
                if following is not None:
                    self.schedule(following, callback)
