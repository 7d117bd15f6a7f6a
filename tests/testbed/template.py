"""MariaDB's programs and the pristine template datadir that every test-bed server copies.

The template is built once per machine/cache directory by ``mariadb-install-db`` and shared
between processes through an ``fcntl`` lock; its name encodes the ``mariadbd --version``
string and the install options, so a server upgrade builds a new one.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

__all__ = ["INSTALL_DB_OPTIONS", "mariadb_version", "template_datadir"]

# Options used to build the template datadir. Part of the template's cache key.
INSTALL_DB_OPTIONS: tuple[str, ...] = (
    "--no-defaults",
    "--user=root",
    "--auth-root-authentication-method=normal",
    "--skip-test-db",
    "--skip-name-resolve",
)

_EXTRA_BIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")


def _binary(name: str) -> str:
    """Return the absolute path of executable ``name`` (also searching the sbin dirs)."""
    search = os.pathsep.join([os.environ.get("PATH", ""), *_EXTRA_BIN_DIRS])
    path = shutil.which(name, path=search)
    if path is None:
        raise FileNotFoundError(f"{name} not found in PATH or {_EXTRA_BIN_DIRS}")
    return path


@functools.lru_cache(maxsize=1)
def mariadb_version() -> str:
    """Return the full ``mariadbd --version`` line (cached per process)."""
    out = subprocess.run(
        [_binary("mariadbd"), "--version"],
        check=True, capture_output=True, text=True, stdin=subprocess.DEVNULL,
    )
    return out.stdout.strip()


def _template_name() -> str:
    """Cache key of the template datadir: version number plus a hash of version and options."""
    version = mariadb_version()
    match = re.search(r"Ver\s+(\S+)", version)
    number = re.sub(r"[^A-Za-z0-9.+-]+", "_", match.group(1) if match else "unknown")
    digest = hashlib.sha256("\n".join((version, *INSTALL_DB_OPTIONS)).encode()).hexdigest()
    return f"datadir-{number}-{digest[:12]}"


def _build_template(build_dir: Path) -> Path:
    """Run mariadb-install-db into ``build_dir/data`` (own tmpdir); return the datadir."""
    datadir = build_dir / "data"
    tmpdir = build_dir / "tmp"
    tmpdir.mkdir()
    cmd = [
        _binary("mariadb-install-db"),
        *INSTALL_DB_OPTIONS,
        f"--datadir={datadir}",
        f"--tmpdir={tmpdir}",
    ]
    result = subprocess.run(
        cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"mariadb-install-db failed (rc={result.returncode}):\n"
            f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )
    return datadir


def template_datadir(cache_root: Path) -> Path:
    """Return a pristine, initialised datadir under ``cache_root``, building it once.

    Contract: the returned directory is complete and must be treated as read-only (copy it,
    never start a server on it). The directory name encodes the ``mariadbd --version`` string,
    so a server upgrade builds a new template. Safe to call concurrently from threads and
    processes: an exclusive ``fcntl.flock`` on ``<cache_root>/<name>.lock`` serialises builders,
    and the datadir is built in a temporary directory and renamed into place, so a present
    directory is always complete.
    """
    cache_root = Path(cache_root)
    cache_root.mkdir(parents=True, exist_ok=True)
    name = _template_name()
    target = cache_root / name
    if target.is_dir():
        return target
    with open(cache_root / f"{name}.lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if target.is_dir():
                return target
            for stale in cache_root.glob(f".build-{name}-*"):  # from a builder that died
                shutil.rmtree(stale, ignore_errors=True)
            build_dir = Path(tempfile.mkdtemp(prefix=f".build-{name}-", dir=cache_root))
            try:
                _build_template(build_dir).rename(target)
            finally:
                shutil.rmtree(build_dir, ignore_errors=True)
            return target
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
