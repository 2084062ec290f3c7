"""Conformance tooling run outside pytest: ``python -m tests.conformance`` (see runner.py)."""
