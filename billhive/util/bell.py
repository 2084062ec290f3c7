"""A bell: each listener's ``pause(seconds)`` waits that long, or less if the bell rings.

The delivery loops listen to one and pause on it between passes that found nothing to do; the
store rings it once a write that recorded due webhook or email deliveries has committed
(``Store.on_deliveries``, on the thread that waited for the write): an event goes out at once
instead of at the loop's next poll. Polling stays the rule (other processes write too, and retries
come due by time): a ring only ends a pause early. A ring is kept for each listener until its next
pause - it may come while the loop is busy (a lane still sending the previous event), and that
pause must then end at once, or the new event would wait out the whole poll.
"""

from __future__ import annotations

import asyncio
import threading


class Bell:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listeners: dict[Listener, asyncio.AbstractEventLoop] = {}

    def ring(self) -> None:
        """Wake every listener (now, or at its next pause); safe from any thread."""
        with self._lock:
            if not self._listeners:
                return
            listeners = list(self._listeners.items())
        for listener, loop in listeners:
            try:
                loop.call_soon_threadsafe(listener.rung.set)
            except RuntimeError:  # that event loop has closed meanwhile: nothing waits there any more
                pass

    def listen(self) -> Listener:
        """A listener on the running event loop (``close`` it when done)."""
        listener = Listener(self)
        with self._lock:
            self._listeners[listener] = asyncio.get_running_loop()
        return listener

    def _forget(self, listener: Listener) -> None:
        with self._lock:
            self._listeners.pop(listener, None)


class Listener:
    def __init__(self, bell: Bell) -> None:
        self.bell = bell
        self.rung = asyncio.Event()

    async def pause(self, seconds: float) -> None:
        """Wait ``seconds``, or until a ring (at once if one came since the last pause)."""
        try:
            await asyncio.wait_for(self.rung.wait(), seconds)
        except TimeoutError:
            pass
        finally:
            self.rung.clear()

    def close(self) -> None:
        self.bell._forget(self)
