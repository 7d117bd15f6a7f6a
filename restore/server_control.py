"""Stopping and starting a restore target's server (physical restores replace its datadir).

The target config says how: ``stop_command`` / ``start_command`` (argv lists; the stop command
must return once the server has exited, the start command once it is launched), or a
``systemd_unit`` (``systemctl stop|start UNIT``). After a start, the server is polled until it
answers, for at most ``start_timeout``.
"""

from __future__ import annotations

import logging
import subprocess
import time

from backupd.config import TargetConfig
from backupd.errors import RestoreFailed, ServerError, UsageError
from backupd.mysql import connect

log = logging.getLogger(__name__)

COMMAND_TIMEOUT = 600.0
POLL_INTERVAL = 0.2


class ServerControl:
    def __init__(self, target: TargetConfig, name: str):
        if not (target.systemd_unit or (target.start_command and target.stop_command)):
            raise UsageError(f"target {name}: a physical restore stops and starts the server; set "
                             f"targets.{name}.start_command and stop_command, or systemd_unit")
        self.target = target
        self.name = name

    def _command(self, action: str) -> list[str]:
        if self.target.systemd_unit:
            return ["systemctl", action, self.target.systemd_unit]
        command = self.target.start_command if action == "start" else self.target.stop_command
        assert command
        return list(command)

    def _run(self, action: str) -> None:
        command = self._command(action)
        log.info("target %s: %s: %s", self.name, action, " ".join(command))
        try:
            done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True,
                                  timeout=COMMAND_TIMEOUT, check=False)
        except FileNotFoundError:
            raise RestoreFailed(f"target {self.name}: {action} command not found: {command[0]}") from None
        except subprocess.TimeoutExpired:
            raise RestoreFailed(f"target {self.name}: {action} command did not return within "
                                f"{COMMAND_TIMEOUT:.0f}s: {' '.join(command)}") from None
        if done.returncode != 0:
            text = (done.stderr or done.stdout).decode("utf-8", "replace").strip()
            raise RestoreFailed(f"target {self.name}: {action} command failed with exit status "
                                f"{done.returncode}: {text.splitlines()[-1] if text else 'no message'}",
                                detail=text[-4000:])

    def answers(self) -> bool:
        """True if a connection to the target succeeds right now."""
        try:
            connect(self.target, label=f"target {self.name}").close()
            return True
        except ServerError:
            return False

    def stop(self) -> None:
        """Stop the server; it must no longer answer afterwards."""
        self._run("stop")
        deadline = time.monotonic() + 60
        while self.answers():
            if time.monotonic() > deadline:
                raise RestoreFailed(f"target {self.name}: still answering at {self.target.describe()} "
                                    "after its stop command returned")
            time.sleep(POLL_INTERVAL)

    def start(self) -> float:
        """Start the server and wait until it answers; return the seconds it took."""
        started = time.monotonic()
        self._run("start")
        deadline = started + self.target.start_timeout
        while not self.answers():
            if time.monotonic() > deadline:
                raise RestoreFailed(f"target {self.name}: not answering at {self.target.describe()} "
                                    f"{self.target.start_timeout:.0f}s after its start command",
                                    hint="look at the server's error log")
            time.sleep(POLL_INTERVAL)
        return time.monotonic() - started
