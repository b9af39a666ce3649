"""The ``perturbscope`` command line (see :mod:`perturbscope.cli.main`)."""
