"""Who caused a change (an API request and its key, the scheduler, billhive itself): stored on
every event the change records."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Origin:
    """Who caused a change: stored on every event the request causes."""

    source: str = "api"  # api | scheduled_job | system | admin_console
    user: str | None = None  # the API key's name for API requests
    origin_user: str | None = None  # chargebee-request-origin-user(-encoded)
    origin_ip: str | None = None
    origin_device: str | None = None
    skip_actions: bool = False  # chargebee-event-actions: all-disabled
    skip_webhooks: bool = False  # chargebee-event-webhook: all-disabled
    skip_emails: bool = False  # chargebee-event-email: all-disabled

    @property
    def origin_json(self) -> dict | None:
        out = {k: v for k, v in (("user", self.origin_user), ("ip", self.origin_ip),
                                 ("device", self.origin_device)) if v}
        return out or None


# no user: Chargebee's v1 events from scheduled jobs carry none ("source": "scheduled_job" and no
# "user" in its recorded v1 invoice_generated payloads; requests from the admin console name one)
SCHEDULER = Origin(source="scheduled_job")
SYSTEM = Origin(source="system", user="billhive")
