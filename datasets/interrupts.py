"""Stopping a long command on SIGINT (Ctrl-C) or SIGTERM (what schedulers and `timeout` send).

The handler raises KeyboardInterrupt where the main thread happens to be, which stops most work
at once. But Python runs signal handlers between bytecodes of *any* Python code, including
weakref callbacks and ``__del__`` methods (h5py frees its object ids through such callbacks), and
an exception raised there is printed as "Exception ignored" and dropped: the run went on and
exited 0. So the handler also records the stop, and long loops call :func:`check_stop` at safe
points (between shards, batches, epochs and methods) to raise it again; an interrupt that was
dropped stops the work at the next safe point instead of never.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_requested: int | None = None  # the number of the signal that asked to stop, if any
_previous_hook = sys.unraisablehook


def _request_stop(signum, frame) -> None:
    global _requested
    _requested = signum
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def stop_requested() -> bool:
    """Whether SIGINT or SIGTERM arrived inside :func:`stop_on_signals`."""
    return _requested is not None


def check_stop() -> None:
    """A safe point: raise KeyboardInterrupt if a stop signal arrived (even one whose first
    KeyboardInterrupt was dropped by a callback)."""
    if _requested is not None:
        raise KeyboardInterrupt(f"signal {signal.Signals(_requested).name}")


def _quiet_dropped_interrupts(unraisable) -> None:
    # A KeyboardInterrupt of ours dropped in a callback is raised again at the next safe point,
    # so the "Exception ignored ... Traceback" Python would print is noise.
    if issubclass(unraisable.exc_type, KeyboardInterrupt) and _requested is not None:
        return
    _previous_hook(unraisable)


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within the block SIGINT and SIGTERM raise KeyboardInterrupt and are remembered for
    :func:`check_stop`; the previous handlers are restored after. Outside the main thread
    (where Python cannot install handlers), or nested in another such block, it changes
    nothing."""
    global _requested, _previous_hook
    if (threading.current_thread() is not threading.main_thread()
            or sys.unraisablehook is _quiet_dropped_interrupts):
        yield
        return
    previous = {signum: signal.signal(signum, _request_stop) for signum in STOP_SIGNALS}
    _previous_hook, sys.unraisablehook = sys.unraisablehook, _quiet_dropped_interrupts
    _requested = None
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        sys.unraisablehook = _previous_hook
        _requested = None


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back during a short step that must not be cut in two (removing a
    partial folder); a signal that arrived meanwhile is delivered when the block ends."""
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
