"""The ``tunlab`` command: :func:`main` parses the arguments, one module per command group
(:mod:`.main` the tunnel, demo and clean-up commands; :mod:`.debug` fate, doctor and dropwatch;
:mod:`.bench`; :mod:`.course` notebooks and lab; :mod:`.kernelspec`)."""

from tunlab.cli.main import main

__all__ = ["main"]
