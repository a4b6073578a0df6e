"""The exception types a user (or their PACS) can cause.

``StudyError`` is raised for problems with the user's files (the CLI maps it to exit code 2, the
dashboard to an in-page message). ``ModelError`` is raised for a model folder or card that cannot be
used. ``PacsError`` is raised for a PACS that cannot be reached or does not answer as expected (the
CLI maps it to exit code 2 too). ``ClusterError`` is raised for a Dask cluster that cannot run the
studies (no scheduler at the address, no worker, workers without this package; exit code 2 too).
Messages name the file (or PACS) and say what was expected and found.
"""

from __future__ import annotations


class StudyError(ValueError):
    """A problem with the input study: names the file and what was expected vs found."""


class ModelError(RuntimeError):
    """A model folder, card or pickle that cannot be used."""


class PacsError(RuntimeError):
    """A PACS that cannot be reached, refuses us, or does not hold what was asked: names the PACS and
    says what was expected vs found."""


class PacsUnreachableError(PacsError):
    """A PACS that did not accept an association (down, unreachable, or refusing us): worth a retry later."""


class ClusterError(RuntimeError):
    """A Dask cluster (``--scheduler``, ``--workers``) that cannot run the studies: names its address and
    says what was expected vs found."""
