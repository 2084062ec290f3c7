"""What the bench database's PostgreSQL backends were doing during a run: pg_stat_activity
sampled every 50 ms from a thread (one connection, one query a sample), each backend of the
bench database counted by its state and wait event. The share of "Lock:transactionid" is
closings queued on a row another transaction holds (a site's number sequence); "IO:WALSync" /
"IO:WALWrite" are commits; "Client:ClientRead" idle in a transaction or between statements,
waiting for billhive; "active" without a wait event is the backend on a CPU (or wanting one).
"""

from __future__ import annotations

import threading
from collections import Counter

from sqlalchemy.engine import make_url

from bench import seed

INTERVAL = 0.05
_SQL = ("SELECT state, wait_event_type, wait_event FROM pg_stat_activity "
        "WHERE datname = %s AND pid <> pg_backend_pid() AND backend_type = 'client backend'")


class WaitSampler:
    def __init__(self, url: str | None):
        self.counts: Counter = Counter()
        self.samples = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.pid: int | None = None  # this sampler's own backend (not the server's: bench/cpu.py leaves it out)
        if url and not url.startswith("sqlite"):
            self._conn = seed.connect(url)
            self.pid = int(self._conn.execute("SELECT pg_backend_pid()").fetchone()[0])
            self._name = make_url(url).database
            self._thread = threading.Thread(target=self._loop, daemon=True, name="bench-pgwait")
            self._thread.start()

    def _loop(self) -> None:
        try:
            while not self._stop.wait(INTERVAL):
                rows = self._conn.execute(_SQL, (self._name,)).fetchall()
                self.samples += 1
                for state, kind, event in rows:
                    if state == "idle":
                        key = "idle"
                    elif kind:
                        key = f"{state}: {kind}:{event}" if state != "active" else f"{kind}:{event}"
                    else:
                        key = "active (CPU)" if state == "active" else str(state)
                    self.counts[key] += 1
        finally:
            self._conn.close()

    def stop(self) -> dict | None:
        """{"samples": n, "backends": mean busy backends, "share": [[what, % of non-idle backend samples]]}."""
        if self._thread is None:
            return None
        self._stop.set()
        self._thread.join(timeout=5)
        busy = sum(v for k, v in self.counts.items() if k != "idle")
        share = [[k, round(100 * v / busy, 1)] for k, v in self.counts.most_common() if k != "idle"] if busy else []
        return {"samples": self.samples, "busy_backends": round(busy / self.samples, 2) if self.samples else None,
                "share": share[:8]}


def text(w: dict | None) -> str:
    if not w:
        return ""
    return (f"PostgreSQL backends busy {w['busy_backends']} on average; of their busy time: "
            + ", ".join(f"{k} {p}%" for k, p in w["share"][:6]))
