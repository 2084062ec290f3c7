"""The unit of work, below the services: who asks and on which site (``context``: Ctx, Work,
Origin), the events outbox a unit records into (``outbox``), the jobs it schedules on the site
clock (``jobs``) and the runner that runs due jobs (``scheduler``, given the job handlers)."""
