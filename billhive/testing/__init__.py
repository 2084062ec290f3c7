"""Tools for the test suites of billhive's users: the pytest plugin (``pytest_plugin``), loaded by
pytest through the ``pytest11`` entry point of the billhive package."""
