"""The exceptions the launcher reports as a plain message instead of a traceback."""

from __future__ import annotations

import signal
import sys

from hydra.errors import InstantiationException


class ApaError(Exception):
    """A problem the user can fix: the message names what is wrong and the way out."""


class Interrupted(BaseException):
    """SIGTERM or SIGINT arrived: the run stops like on Ctrl-C and the process exits with ``128 + signum``.

    A BaseException, so that code catching ``Exception`` (a failing sweep trial) lets it through.
    """

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def interruption(exc: BaseException) -> str | None:
    """The signal's name when ``exc`` ended a run because of SIGTERM / SIGINT / Ctrl-C, else None.

    Lightning turns a KeyboardInterrupt inside ``fit`` into ``sys.exit(1)``; the interrupt is then the context.
    """
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, Interrupted):
            return seen.signal_name
        if isinstance(seen, KeyboardInterrupt):
            return "SIGINT"
        seen = seen.__cause__ or seen.__context__
    return None


def user_error(exc: BaseException) -> str | None:
    """The one-paragraph message for an error the user can fix by changing the command, else None.

    Lightning's MisconfigurationException counts too; it is looked up only when Lightning is already loaded
    (otherwise no exception can be one), so a task without Lightning does not import it.
    """
    fixable: tuple[type[BaseException], ...] = (ApaError,)
    if "lightning" in sys.modules:
        from lightning.fabric.utilities.exceptions import MisconfigurationException

        fixable += (MisconfigurationException,)
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, fixable):
            return str(seen)
        seen = seen.__cause__
    if isinstance(exc, InstantiationException):  # a wrong key or value in a _target_ config
        return " ".join(str(exc).split())
    return None


def describe(exc: BaseException) -> str:
    """``Type: message`` of an unexpected error, for metrics.json."""
    return f"{type(exc).__name__}: {exc}"
