"""Stopping and starting a restore target's server (physical restores replace its datadir).

The target config says how: ``stop_command`` / ``start_command`` (argv lists; the stop command
must return once the server has exited, the start command once it is launched), or a
``systemd_unit`` (``systemctl stop|start UNIT``). After a start, the server is polled until it
answers, for at most ``start_timeout``.
"""

from __future__ import annotations

import logging
import time

from backupd.errors import RestoreFailed, ServerError, UsageError
from backupd.mysql.connection import connect
from backupd.mysql.tools import run_tool
from backupd.repo.repository import Target

log = logging.getLogger(__name__)

COMMAND_TIMEOUT = 600.0
POLL_INTERVAL = 0.2


class ServerControl:
    def __init__(self, target: Target):
        config = target.config
        if not (config.systemd_unit or (config.start_command and config.stop_command)):
            raise UsageError(f"{target.label}: a physical restore stops and starts the server; set "
                             f"targets.{target.name}.start_command and stop_command, or systemd_unit")
        self.target = config
        self.name = target.name
        self.label = target.label

    def _command(self, action: str) -> list[str]:
        if self.target.systemd_unit:
            return ["systemctl", action, self.target.systemd_unit]
        command = self.target.start_command if action == "start" else self.target.stop_command
        assert command
        return list(command)

    def _run(self, action: str) -> None:
        command = self._command(action)
        log.info("%s: %s: %s", self.label, action, " ".join(command))
        run_tool(self.label, f"{action} command", command, error=RestoreFailed, timeout=COMMAND_TIMEOUT)

    def answers(self) -> bool:
        """True if a connection to the target succeeds right now."""
        try:
            connect(self.target, label=self.label).close()
            return True
        except ServerError:
            return False

    def stop(self) -> None:
        """Stop the server; it must no longer answer afterwards."""
        self._run("stop")
        deadline = time.monotonic() + 60
        while self.answers():
            if time.monotonic() > deadline:
                raise RestoreFailed(f"{self.label}: still answering at {self.target.describe()} "
                                    "after its stop command returned")
            time.sleep(POLL_INTERVAL)

    def start(self) -> float:
        """Start the server and wait until it answers; return the seconds it took."""
        started = time.monotonic()
        self._run("start")
        deadline = started + self.target.start_timeout
        while not self.answers():
            if time.monotonic() > deadline:
                raise RestoreFailed(f"{self.label}: not answering at {self.target.describe()} "
                                    f"{self.target.start_timeout:.0f}s after its start command",
                                    hint="look at the server's error log")
            time.sleep(POLL_INTERVAL)
        return time.monotonic() - started
