"""Travelling with a test site's time machine and waiting for the travel to end (travels that take
longer than billhive's inline budget go on in the background, as Chargebee v2's do)."""

from __future__ import annotations

import json
import time
from typing import Any

TM = "/time_machines/delorean"


def travel(api: Any, destination: int, *, timeout: float = 120.0) -> dict:
    """travel_forward, then wait until it is over; the time machine as it ended."""
    tm = api.post(TM + "/travel_forward", {"destination_time": destination})["time_machine"]
    return wait_for_travel(api, tm, timeout=timeout)


def wait_for_travel(api: Any, tm: dict | None = None, *, timeout: float = 120.0, interval: float = 0.05) -> dict:
    """What the official v2 SDKs' wait_for_time_travel_completion does (chargebee-python 3.x
    ``TimeMachine.wait_for_time_travel_completion``: retrieve while ``in_progress``; on ``failed``
    raise with ``json.loads(error_json)`` and its ``http_code``), with a wider deadline and a
    shorter pause than their 30 tries 3 s apart."""
    tm = tm or api.get(TM)["time_machine"]
    deadline = time.monotonic() + timeout
    while tm["time_travel_status"] == "in_progress":
        if time.monotonic() > deadline:
            raise AssertionError(f"the time travel is taking too much time: {tm}")
        time.sleep(interval)
        tm = api.get(TM)["time_machine"]
    if tm["time_travel_status"] == "failed":
        err = json.loads(tm["error_json"])
        raise TravelFailed(int(err["http_code"]), err)
    return tm


class TravelFailed(Exception):
    def __init__(self, http_code: int, error: dict):
        super().__init__(f"time travel failed ({http_code}): {error}")
        self.http_code = http_code
        self.error = error
