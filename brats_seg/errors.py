"""The two exception types a user can cause.

``StudyError`` is raised for problems with the user's files (the CLI maps it to exit code 2, the
dashboard to an in-page message). ``ModelError`` is raised for a model folder or card that cannot be
used. Messages name the file and say what was expected and what was found.
"""

from __future__ import annotations


class StudyError(ValueError):
    """A problem with the input study: names the file and what was expected vs found."""


class ModelError(RuntimeError):
    """A model folder, card or pickle that cannot be used."""
