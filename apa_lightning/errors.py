"""The exceptions the launcher reports as one plain paragraph instead of a traceback."""

from __future__ import annotations

import errno
import inspect
import os
import re
import signal
import sys
import traceback
from difflib import get_close_matches

from hydra.errors import InstantiationException

# the wording of Python's TypeError and of Hydra's InstantiationException (no attribute holds these)
UNEXPECTED_ARGUMENT = re.compile(r"([\w.]+)\(\) got an unexpected keyword argument '(\w+)'")
TARGET_CALL = re.compile(r"Error in call to target '([\w.]+)'")
FULL_KEY = re.compile(r"full_key: (\S+)")
PARAMETERS_SHOWN = 20  # of a _target_ that takes no parameter of a name close to the unexpected one
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)  # no space left, or over quota
NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)
FILE_IN_THE_WAY = (errno.ENOTDIR, errno.EISDIR, errno.EEXIST)  # a file where a folder belongs, or the reverse


class ApaError(Exception):
    """A problem the user can fix: the message names what is wrong and the way out."""


class Interrupted(BaseException):
    """SIGTERM, SIGINT or SIGHUP arrived: the run stops as on Ctrl-C, and the process exits with ``128 + signum``.
    A BaseException, so that code catching ``Exception`` (a failing sweep trial) lets it through."""

    def __init__(self, signum: int) -> None:
        self.signum, self.signal_name, self.exit_code = signum, signal.Signals(signum).name, 128 + signum
        super().__init__(self.signal_name)


def chain(exc: BaseException, context: bool = True) -> list[BaseException]:
    """``exc`` and the exceptions it was raised from (``__cause__``, else with ``context`` its ``__context__``),
    outermost first, each once: a chain that loops back (TensorBoard's writer thread raises an exception object
    again while handling a later one) ends before the repeat."""
    links: list[BaseException] = []
    link: BaseException | None = exc
    while link is not None and all(link is not seen for seen in links):
        links.append(link)
        link = link.__cause__ or (link.__context__ if context else None)
    return links


def interruption(exc: BaseException) -> str | None:
    """The signal's name when ``exc`` ended a run because of SIGTERM / SIGINT / SIGHUP / Ctrl-C, else None.
    Lightning turns a KeyboardInterrupt inside ``fit`` into ``sys.exit(1)``: the interrupt is then the context."""
    for link in chain(exc):
        if isinstance(link, (Interrupted, KeyboardInterrupt)):
            return link.signal_name if isinstance(link, Interrupted) else "SIGINT"
    return None


def user_error(exc: BaseException) -> str | None:
    """The one-paragraph message for an error the user can fix by changing the command or the file system, else
    None. Lightning's MisconfigurationException counts too: where its module is not loaded, none exists."""
    lightning = sys.modules.get("lightning.fabric.utilities.exceptions")
    fixable = (ApaError, lightning.MisconfigurationException) if lightning else (ApaError,)
    for link in chain(exc, context=False):
        if isinstance(link, fixable):
            return str(link)
        if isinstance(link, RuntimeError) and _raised_in(link, "lightning.pytorch.callbacks.early_stopping"):
            # its monitor is not a logged metric (Lightning's message lists those that are)
            listed = str(link).rstrip(". ")
            return f"{listed}. Set callbacks.early_stopping.monitor (default: optimized_metric) to one of them."
    if isinstance(exc, OSError) and exc.filename and exc.errno in (*NOT_WRITABLE, *FILE_IN_THE_WAY):
        return _file_system_error(exc)
    full = next((link for link in chain(exc) if isinstance(link, OSError) and link.errno in DISK_FULL), None)
    if full is not None:  # e.g. TensorBoard's writer thread, whose error the main thread sees again
        where = f"writing {os.fsdecode(full.filename)} failed" if full.filename else "a write failed"
        return (
            f"the disk is full: {where} ({full.strerror or os.strerror(full.errno)}). Free some space there, or put "
            "the runs elsewhere (paths.log_dir, or APA_ROOT), then resume the run (its finished epochs are kept)."
        )
    if isinstance(exc, InstantiationException):  # a wrong key or value in a _target_ config
        return unexpected_argument(exc) or " ".join(str(exc).split())
    return None


def _raised_in(exc: BaseException, module: str) -> bool:
    """Whether the innermost frame of ``exc``'s traceback is code of ``module``."""
    frames = [frame for frame, _ in traceback.walk_tb(exc.__traceback__)]
    return bool(frames) and frames[-1].f_globals.get("__name__") == module


def _file_system_error(exc: OSError) -> str:
    """The message for an OSError on a path that cannot be written, or where a file stands in a folder's place."""
    where = f"{exc.filename}" + (f" -> {exc.filename2}" if exc.filename2 else "")
    if exc.errno in NOT_WRITABLE:
        fix = "make that folder writable for this user"
    else:
        fix = "a file stands where a folder is needed on that path (or a folder where a file is): move it away"
    return (
        f"{where} cannot be written: {exc.strerror or os.strerror(exc.errno)} ({errno.errorcode[exc.errno]}). "
        f"Either {fix}, or set paths.data_dir (datasets) or paths.log_dir (runs) to another folder (APA_ROOT holds "
        "both)."
    )


def _parameters(target: str, owner: str) -> list[str] | None:
    """The keyword parameters of ``target``'s classes down to ``owner``, the function Python's TypeError named (the
    target's ``__init__`` or, through ``**kwargs``, a base class's); None when ``owner`` is none of them (other code
    the target called), [] when they cannot be looked up."""
    from hydra.utils import get_object

    try:
        found = get_object(target)
    except Exception:  # only the suggestions are lost
        return []
    functions = [c.__init__ for c in inspect.getmro(found)] if inspect.isclass(found) else [found]
    names = [getattr(f, "__qualname__", None) for f in functions]
    if owner not in names:
        return None
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    parameters: dict[str, None] = {}
    for function in functions[: names.index(owner) + 1]:
        try:
            signature = inspect.signature(function).parameters.values()
        except (TypeError, ValueError):  # a builtin without a signature: no suggestions of its own
            continue
        parameters.update(dict.fromkeys(p.name for p in signature if p.kind in kinds and p.name != "self"))
    return list(parameters)


def unexpected_argument(exc: InstantiationException) -> str | None:
    """The message for a ``_target_`` config with a key its class does not take (``+trainer.max_epoch=1``), naming
    the key and the parameters of close names; None for other instantiation errors. A nested target built by its
    parent (``model.net``) is named by its class. Hydra gives the target and the key only in its message
    (TARGET_CALL, FULL_KEY: tests/test_library_contracts.py pins that wording)."""
    inner = [link for link in chain(exc, context=False) if isinstance(link, InstantiationException)][-1]
    cause = inner.__cause__  # the error of the target that failed, which Hydra raises its own from
    unexpected = UNEXPECTED_ARGUMENT.search(str(cause)) if isinstance(cause, TypeError) else None
    target = TARGET_CALL.match(str(inner))
    parameters = _parameters(target[1], unexpected[1]) if unexpected and target else None
    if parameters is None:
        return None
    name, own_key, outer_key = unexpected[2], FULL_KEY.search(str(inner)), FULL_KEY.search(str(exc))
    parent = f"{own_key[1]}." if own_key else ""
    where = f" (a _target_ inside {outer_key[1]})" if outer_key and not own_key else ""
    close = get_close_matches(name, parameters, n=1)
    more = ", ..." if len(parameters) > PARAMETERS_SHOWN else ""
    hint = f" It takes: {', '.join(parameters[:PARAMETERS_SHOWN])}{more}." if parameters else ""
    hint = f" Did you mean {parent}{close[0]}?" if close else hint
    return f"{parent}{name} is not a parameter of {target[1]}{where}.{hint} Correct the key or leave it out."


def describe(exc: BaseException) -> str:
    """``Type: message`` of an unexpected error, for metrics.json."""
    return f"{type(exc).__name__}: {exc}"
