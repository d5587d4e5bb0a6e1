"""nodegraph's fixtures come from its pytest plugin (``nodegraph.testing``), loaded here by name so that the tests
also run where plugin auto-loading is off (PYTEST_DISABLE_PLUGIN_AUTOLOAD)."""

pytest_plugins = ["nodegraph.testing"]
