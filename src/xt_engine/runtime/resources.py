"""What a run's machine resources answer: a full or forbidden disk as one line, peak memory."""

from __future__ import annotations

import errno
import resource

from xt_engine.errors import InputError

_WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES)


def write_error(err: OSError, output: object) -> Exception:
    """A full disk (of the store or of the temporary folder holding a two-pass token cache),
    a read-only or forbidden location: one line and the fix; the store stays resumable (only
    regions wholly written are recorded as done). Other OS errors pass through unchanged."""
    if err.errno not in _WRITE_ERRNOS:
        return err
    where = err.filename or output or "the temporary folder"
    problem = (
        "no space left on the device"
        if err.errno in (errno.ENOSPC, errno.EDQUOT)
        else err.strerror or "cannot write"
    )
    return InputError(
        f"{problem} while writing {where}",
        "free space or choose another --out (TMPDIR for the token cache), then run again "
        "with --resume",
    )


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB: Linux's ``VmHWM`` (it starts fresh
    at ``exec``, unlike ``ru_maxrss``, which a child inherits from a larger parent), else
    ``ru_maxrss`` (KiB on Linux)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
