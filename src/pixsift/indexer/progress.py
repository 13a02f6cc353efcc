"""How the indexer reports progress without printing: the caller passes a listener."""

from __future__ import annotations

from typing import Protocol


class IndexProgress(Protocol):
    """Receives the phases of an index run; the command line draws them as progress bars."""

    def start(self, phase: str, total: int | None = None) -> None:
        """A phase begins; `total` is the number of steps, or None when unknown."""
        ...

    def advance(self, steps: int = 1) -> None:
        """Some steps of the current phase are done."""
        ...

    def stop(self) -> None:
        """The current phase has ended."""
        ...


class SilentProgress:
    """The default listener: reports nothing."""

    def start(self, phase: str, total: int | None = None) -> None:
        pass

    def advance(self, steps: int = 1) -> None:
        pass

    def stop(self) -> None:
        pass
