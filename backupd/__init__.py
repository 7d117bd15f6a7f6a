"""backupd: streaming, compressed, multi-store backups of sharded MySQL/MariaDB fleets."""

__version__ = "0.1.0"
