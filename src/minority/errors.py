"""User-facing errors.

Every problem caused by bad input (a wrong flag value, a missing model, an unreadable file) raises
:class:`MinorityError` with a one-line message that names the problem and the fix. The CLI prints
that line (``error: ...``) and exits with status 2; library users can catch it like a ``ValueError``.
"""

from __future__ import annotations


class MinorityError(ValueError):
    """A one-line, actionable error about the user's input or environment."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


def check(condition: bool, message: str) -> None:
    """Raise :class:`MinorityError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise MinorityError(message)
