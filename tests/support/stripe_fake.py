"""A stateful Stripe fake for the tests: localstripe (PyPI) in a child process on a free port.

``StripeFake.start()`` runs ``tests.support.localstripe_server`` and waits for the port it bound;
``configure(site)`` points a site at it (``gateway=stripe``, a test key, ``stripe_api_base``);
``intents``/``refunds`` read its books (what was charged, with billhive's idempotency key in the
metadata). localstripe keeps no idempotency keys and has no search API: the Stripe gateway's
lookup then scans the list, which is what finds an interrupted charge here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from billhive.gateway.stripe import KEY_FIELD, SITE_FIELD

ROOT = Path(__file__).resolve().parents[2]
SECRET = "sk_test_billhivefake0000"


class StripeFake:
    def __init__(self, proc: subprocess.Popen, port: int):
        self.proc = proc
        self.url = f"http://127.0.0.1:{port}"
        self.http = httpx.Client(base_url=self.url, auth=(SECRET, ""), timeout=10)

    @classmethod
    def start(cls) -> StripeFake:
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        proc = subprocess.Popen([sys.executable, "-m", "tests.support.localstripe_server"], cwd=str(ROOT), env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "PORT <n>" once it listens ("" if it died)
        if not line.startswith("PORT "):
            proc.kill()
            raise RuntimeError(f"localstripe did not start: {line!r}")
        return cls(proc, int(line.split()[1]))

    def stop(self) -> None:
        self.http.close()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            self.proc.kill()

    def settings(self) -> dict[str, str]:
        """The site settings that make a site charge through this fake."""
        return {"gateway": "stripe", "stripe_secret_key": SECRET, "stripe_api_base": self.url}

    def _all(self, path: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        params: dict[str, Any] = {"limit": 100}
        while True:
            page = self.http.get(path, params=params).json()
            out.extend(page["data"])
            if not page.get("has_more") or not page["data"]:
                return out
            params["starting_after"] = page["data"][-1]["id"]

    def intents(self, site_pk: int) -> list[dict[str, Any]]:
        """Every PaymentIntent billhive made for the site (oldest first)."""
        return [p for p in self._all("/v1/payment_intents")
                if (p.get("metadata") or {}).get(SITE_FIELD) == str(site_pk)]

    def charges_by_key(self, site_pk: int) -> dict[str, list[str]]:
        """billhive idempotency key -> statuses of the PaymentIntents carrying it."""
        out: dict[str, list[str]] = {}
        for p in self.intents(site_pk):
            out.setdefault(p["metadata"][KEY_FIELD], []).append(p["status"])
        return out

    def refunds(self, site_pk: int) -> list[dict[str, Any]]:
        return [r for r in self._all("/v1/refunds") if (r.get("metadata") or {}).get(SITE_FIELD) == str(site_pk)]

    def customers(self) -> list[dict[str, Any]]:
        return self._all("/v1/customers")
