"""The ``cka-probe`` command line: one thin click command per verb (see :mod:`cka_probe.cli.main`)."""
