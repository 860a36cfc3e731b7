"""User errors: one line that says what was wrong and what would be right.

The command line prints these without a traceback and exits non-zero; anything else is our bug.
"""

from __future__ import annotations


class DnasError(ValueError):
    """Bad input from a user: a wrong name, a bad budget, a missing dataset, a corrupt file."""

    exit_code = 2  # what the command line exits with
