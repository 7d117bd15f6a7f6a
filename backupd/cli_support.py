"""What both command-line tools share: logging set-up and the one place errors become exit codes."""

from __future__ import annotations

import faulthandler
import logging
import signal
import sys
from collections.abc import Sequence

import click

from backupd.config import Config, load_config, resolve_config_path
from backupd.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, BackupdError, exit_code_for

EXIT_CODES_HELP = ("Exit codes: 0 ok; 1 operation failed; 2 usage or configuration error; "
                   "3 verification failed (corruption, data mismatch, an audit finding).")


def setup_logging(prog: str, verbose: bool = False, quiet: bool = False) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"%(relativeCreated)8.0fms {prog}: %(levelname)s: %(message)s"
                                           if verbose else f"{prog}: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer", "libcloud"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def print_table(rows: Sequence[Sequence[str]]) -> None:
    """Print rows as left-aligned columns, two spaces apart (the first row is the header)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def report_error(prog: str, error: BackupdError) -> None:
    click.echo(f"{prog}: error: {error.message}", err=True)
    if error.detail and error.detail.strip() != error.message:
        for line in error.detail.strip().splitlines()[-20:]:
            click.echo(f"  | {line}", err=True)
    if error.hint:
        click.echo(f"  hint: {error.hint}", err=True)


class Terminated(BaseException):
    """SIGTERM arrived: unwind like Ctrl-C, so a running backup deletes its parts."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated()


def run_cli(prog: str, command: click.Command, argv: Sequence[str] | None) -> int:
    """Run a click command and map every outcome to the documented exit code. ``kill -USR1``
    prints every thread's stack to stderr (a command that seems stuck says where)."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    try:
        result = command.main(args=list(argv) if argv is not None else None, prog_name=prog,
                              standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return EXIT_USAGE if isinstance(exc, click.UsageError) else EXIT_FAILED
    except click.Abort:
        click.echo(f"{prog}: aborted", err=True)
        return 130
    except KeyboardInterrupt:
        click.echo(f"{prog}: interrupted", err=True)
        return 130
    except Terminated:
        click.echo(f"{prog}: terminated", err=True)
        return 143
    except BackupdError as exc:
        report_error(prog, exc)
        return exit_code_for(exc)
    return result if isinstance(result, int) else EXIT_OK


def load_config_at(path: str | None) -> Config:
    """The configuration at ``--config`` (else ``$BACKUPD_CONFIG``, else the default), validated."""
    return load_config(resolve_config_path(path))


class LazyConfig:
    """Reads and validates the configuration the first time a command needs it (``--help``
    and usage errors never read it)."""

    def __init__(self, path: str | None):
        self.path = path
        self._config: Config | None = None

    def __call__(self) -> Config:
        if self._config is None:
            self._config = load_config_at(self.path)
        return self._config
