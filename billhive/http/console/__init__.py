"""The admin console at ``/admin``: server-rendered pages (Jinja2 templates under
billhive/templates/console/) to look at and operate every site without SQL. Off (404) unless
``Config.admin_token`` is set. ``/admin/api`` is the admin JSON API's (issue 14), not this.

Pages read through the API's own operations (``ApiEndpoint.call``: the same decoding,
validation and v2-style list filters as ``/api/v1``) and billhive.services.observe; the few
actions (resend an event, travel in time, start afresh, create a test site) are the same
operations, made with origin ``admin_console``. See views.py for the routes."""

from billhive.http.console.views import routes

__all__ = ["routes"]
