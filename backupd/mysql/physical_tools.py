"""Which physical backup tool handles a backup: mariabackup (MariaDB) or xtrabackup (MySQL),
each with the extractor of its xbstream (mbstream / xbstream)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from backupd.config import Settings
from backupd.errors import SourceError
from backupd.mysql.tools import version_output
from backupd.repo.model import Manifest, ServerInfo, ToolName

COMPLETED = "completed OK!"  # the last line of every successful mariabackup/xtrabackup run


@dataclass(frozen=True)
class PhysicalTool:
    """The backup tool of a vendor and the extractor of its streams."""

    name: ToolName       # "mariabackup" | "xtrabackup"
    binary: str
    extractor: str       # mbstream | xbstream binary


def physical_tool(method: str, server: ServerInfo, settings: Settings) -> PhysicalTool:
    """The tool for ``method`` ("physical" picks it from the server's vendor)."""
    name = method if method != "physical" else ("mariabackup" if server.vendor == "mariadb" else "xtrabackup")
    if name == "mariabackup":
        return PhysicalTool("mariabackup", settings.mariabackup, settings.mbstream)
    return PhysicalTool("xtrabackup", settings.xtrabackup, settings.xbstream)


def tool_for_manifest(manifest: Manifest, settings: Settings) -> PhysicalTool:
    """The tool that prepares (and the extractor that unpacks) ``manifest``'s stream."""
    assert manifest.physical is not None
    return physical_tool(manifest.physical.tool, manifest.server, settings)


def tool_version(binary: str) -> str:
    """``mariabackup --version`` as a short string, e.g. ``10.11.19-MariaDB``."""
    text = version_output(binary, "physical backup tool", error=SourceError,
                          hint="install mariadb-backup (or percona-xtrabackup), or set [backupd] "
                               "mariabackup / xtrabackup")
    match = re.search(r"server (\S+)", text) or re.search(r"[Vv]ersion (\S+)", text)
    return match.group(1) if match else text.strip().splitlines()[0] if text.strip() else "unknown"
