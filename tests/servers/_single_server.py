"""The life cycle of a test server that runs as one :class:`ServerProcess` (moto, carbon):
start on a free (or given) port, wait until it serves, retry when the port was taken."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Self

from tests.servers._server_process import BIND_ERROR_MARKERS, ServerProcess, find_free_port, tail

__all__ = ["PortTaken", "START_ATTEMPTS", "SingleProcessServer"]


class PortTaken(Exception):
    """A server could not bind its port (raised by ``_wait_ready``; start picks another)."""


START_ATTEMPTS = 3


class SingleProcessServer:
    """The life cycle of a test server that runs as one :class:`ServerProcess` (moto,
    carbon-cache). Subclasses set ``name`` and ``port`` (None: pick a free one) and implement
    :meth:`_process` (the process for ``self.port``, not started) and :meth:`_serves`."""

    name = "server"
    port: int | None = None
    _proc: ServerProcess | None = None

    def _process(self) -> ServerProcess:
        raise NotImplementedError

    def _serves(self) -> bool:
        """True once the server answers on ``self.port``; raises :class:`PortTaken` when
        something else answers there."""
        raise NotImplementedError

    def _wait_ready(self, deadline: float, offset: int) -> None:
        """Return once :meth:`_serves`; :class:`PortTaken` if the process died of a bind
        error (its log from ``offset`` says so), RuntimeError for any other death or at
        ``deadline``."""
        assert self._proc is not None
        while True:
            code = self._proc.exit_code()
            if code is not None:
                with open(self.log_path, "rb") as f:
                    f.seek(offset)
                    fresh = f.read().decode(errors="replace")
                if any(marker in fresh for marker in BIND_ERROR_MARKERS):
                    raise PortTaken()
                raise RuntimeError(f"{self.name} exited with code {code} during start:\n{tail(self.log_path)}")
            if self._serves():
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not ready in time:\n{tail(self.log_path)}")
            time.sleep(0.05)

    @property
    def log_path(self) -> Path:
        raise NotImplementedError

    def start(self, timeout: float = 30.0) -> None:
        """Start and wait until it serves. A port given to the constructor (or kept from an
        earlier start) is reused; otherwise a free one is picked, and picked again if it was
        taken meanwhile."""
        if self.running():
            raise RuntimeError(f"{self.name} already running on port {self.port}")
        fixed_port = self.port is not None
        for attempt in range(START_ATTEMPTS):
            if self.port is None or (attempt and not fixed_port):
                self.port = find_free_port()
            self._proc = self._process()
            offset = self._proc.log_offset()
            self._proc.start()
            try:
                self._wait_ready(time.monotonic() + timeout, offset)
                return
            except PortTaken:
                self.kill()
                if fixed_port:
                    raise RuntimeError(f"{self.name}: port {self.port} is taken:\n{tail(self.log_path)}") from None
            except BaseException:
                self.kill()
                raise
        raise RuntimeError(f"{self.name}: ports kept being taken; gave up")

    @property
    def pid(self) -> int | None:
        """Pid of the leash running the server (leader of its process group), if started."""
        return self._proc.pid if self._proc is not None else None

    def running(self) -> bool:
        return self._proc is not None and self._proc.running()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, SIGKILL after ``timeout`` s. Idempotent."""
        if self._proc is not None:
            self._proc.stop(timeout)
            self._proc = None

    def kill(self) -> None:
        """SIGKILL: what the server held only in memory is lost. Idempotent."""
        if self._proc is not None:
            self._proc.kill()
            self._proc = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
