"""Benchmarks and accuracy scoring: ``telediag bench ...``.

Nothing in the runtime imports this package; only the ``bench`` command does, lazily.
Each benchmark prints its figures as a table beside the peers it names, measured in the
same run on the same machine.
"""
