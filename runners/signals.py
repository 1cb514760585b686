"""How a sweep stops: SIGINT (Ctrl-C), SIGTERM (SLURM, Kubernetes, ``timeout``) and SIGHUP (a closed terminal) all
stop it the same way in every phase — checks, source preparation, trials — so the driver saves the cube as far as
it got and exits 130 with "rerun the same command to resume".

One handler serves the three signals. While Ray Tune's loop runs, Tune's own SIGINT handler (its graceful stop:
trials end, ``fit`` returns) is the current SIGINT handler, and SIGTERM / SIGHUP hand over to it; in every other
phase the handler raises :class:`KeyboardInterrupt` in the main thread, which the sweep turns into a saved cube.
A shell's background job starts with SIGINT ignored: that is why the handler is installed rather than inherited —
a SIGTERM mapped onto an ignored SIGINT would be lost.
"""

from __future__ import annotations

import contextlib
import signal
import threading

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _stop(signum, frame) -> None:
    current = signal.getsignal(signal.SIGINT)
    if signum != signal.SIGINT and callable(current) and current is not _stop:
        current(signal.SIGINT, frame)  # Tune's loop is running: its graceful stop, as for Ctrl-C
        return
    raise KeyboardInterrupt(f"stopped by {signal.Signals(signum).name}")


def install() -> None:
    """Make :func:`_stop` the handler of every stop signal (again: ``ray.init`` installs its own SIGTERM
    handler, which ends the driver without saving). Only the main thread may set handlers; elsewhere (a
    notebook's worker thread) nothing changes."""
    if threading.current_thread() is threading.main_thread():
        for signum in STOP_SIGNALS:
            signal.signal(signum, _stop)


@contextlib.contextmanager
def stopping_cleanly():
    """:func:`install` for the block, then the handlers that were there before."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    install()
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
