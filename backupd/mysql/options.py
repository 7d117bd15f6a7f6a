"""The 0600 option files through which passwords reach client tools (never argv, never the
environment): mysqldump, mariabackup/xtrabackup and the mysql client read ``--defaults-file``."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from backupd.config import EndpointConfig
from backupd.processes import pid_alive


def _option_value(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


_OPTION_DIR = re.compile(r"^backupd-(\d+)-")


def remove_stale_option_dirs(work_dir: str | None = None) -> None:
    """Remove option-file folders left by backupd processes that were killed (SIGKILL, a
    crash) before they could clean up: their names carry the pid that made them."""
    root = Path(work_dir or tempfile.gettempdir())
    try:
        names = os.listdir(root)
    except OSError:
        return
    for name in names:
        match = _OPTION_DIR.match(name)
        if match and not pid_alive(int(match.group(1))):
            shutil.rmtree(root / name, ignore_errors=True)  # not ours to read: rmtree fails quietly


@contextmanager
def option_file(endpoint: EndpointConfig, work_dir: str | None = None) -> Iterator[Path]:
    """Write a ``[client]`` option file readable only by us (0600, in a 0700 folder).

    This is how passwords reach mysqldump and mysql: never argv, never the environment. The
    file and its folder are removed when the context exits; folders left by killed processes
    are removed by the next one (``remove_stale_option_dirs``).
    """
    remove_stale_option_dirs(work_dir)
    folder = Path(tempfile.mkdtemp(prefix=f"backupd-{os.getpid()}-", dir=work_dir))
    path = folder / "client.cnf"
    lines = ["[client]", f"user={_option_value(endpoint.user)}"]
    if endpoint.password is not None:
        lines.append(f"password={_option_value(endpoint.password.reveal())}")
    if endpoint.socket:
        lines.append(f"socket={_option_value(endpoint.socket)}")
    else:
        lines += [f"host={_option_value(endpoint.host)}", f"port={endpoint.port}", "protocol=TCP"]
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write("\n".join(lines) + "\n")
        yield path
    finally:
        shutil.rmtree(folder, ignore_errors=True)
