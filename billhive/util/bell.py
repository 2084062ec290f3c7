"""A bell: ``pause(seconds)`` waits that long, or less if someone rings meanwhile.

The delivery loops pause on one between passes that found nothing to do, and the store rings it
once a write that recorded due webhook or email deliveries has committed (``Store.on_deliveries``,
on the thread that waited for the write): an event goes out at once instead of at the loop's next
poll. Polling
stays the rule (other processes write too, and retries come due by time): a ring only ends a
pause early, and a ring while no one pauses is not kept - the loop is busy and passes again anyway.
"""

from __future__ import annotations

import asyncio
import threading


class Bell:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[asyncio.Event, asyncio.AbstractEventLoop] = {}

    def ring(self) -> None:
        """Wake every pause now; safe from any thread."""
        with self._lock:
            if not self._waiting:
                return
            waiting = list(self._waiting.items())
        for event, loop in waiting:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # that event loop has closed meanwhile: nothing waits there any more
                pass

    async def pause(self, seconds: float) -> None:
        """Wait ``seconds``, or until the next ring."""
        event = asyncio.Event()
        with self._lock:
            self._waiting[event] = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(event.wait(), seconds)
        except TimeoutError:
            pass
        finally:
            with self._lock:
                self._waiting.pop(event, None)
