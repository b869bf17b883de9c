"""diffsci.cli: the ``diffsci`` command."""
