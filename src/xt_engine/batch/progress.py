"""A batch's progress on stderr: on a terminal two bars, the images and the regions of the
image reported last; elsewhere one line per finished image."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from xt_engine.batch.report import ImageResult

_WIDTH = 30


def _bar(done: int, total: int) -> str:
    filled = int(_WIDTH * done / max(total, 1))
    return f"[{'#' * filled}{'.' * (_WIDTH - filled)}] {done}/{total}"


class BatchProgress:
    """Listener for :func:`xt_engine.batch.runner.run_batch`."""

    def __init__(self, total: int, stream: TextIO | None = None, tty: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.total = total
        self.finished = 0
        self.failed = 0
        self.current: tuple[str, int, int] | None = None
        self.started = time.monotonic()
        self._drawn = False

    def __call__(self, kind: str, *args: object) -> None:
        if kind == "image":
            name, done, total = args
            self.current = (str(name), int(str(done)), int(str(total)))
        elif kind == "finished":
            (result,) = args
            assert isinstance(result, ImageResult)
            self.finished += 1
            self.failed += result.status == "failed"
            if self.current and self.current[0] + ".zarr" == result.store:
                self.current = None
            if not self.tty:
                what = f": {result.error}" if result.error else f" ({result.seconds:.1f} s)"
                self.stream.write(
                    f"xt batch: [{self.finished}/{self.total}] {result.status} "
                    f"{result.store}{what}\n"
                )
                self.stream.flush()
        if self.tty:
            self._draw()

    def _draw(self) -> None:
        failed = f", {self.failed} failed" if self.failed else ""
        lines = [f"images  {_bar(self.finished, self.total)}{failed}"]
        if self.current is not None:
            name, done, total = self.current
            lines.append(f"regions {_bar(done, total)} {name}")
        else:
            lines.append("")
        up = "\x1b[2F" if self._drawn else ""
        self.stream.write(up + "".join(f"\x1b[2K{line}\n" for line in lines))
        self.stream.flush()
        self._drawn = True
