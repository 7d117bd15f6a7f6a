"""Child processes for test servers: own session, log file, lifeline, terminate-then-kill.

:class:`ServerProcess` starts one server command as the leader of a new session (so it and
everything it forks form one process group we can signal as a whole), with stdin closed and
stdout/stderr appended to a log file.

Lifeline: every child gets the read end of a pipe whose only write end stays in the test
process. When the test process dies without cleaning up (SIGKILL, crash), the child reads EOF
and shuts itself down, so no server outlives its test session. Servers we cannot teach that
(memcached, moto_server) run under a *leash*: :mod:`tests.servers._leash` run as a script,
stdlib only, which starts the real command as its child, ends it on lifeline EOF or
SIGTERM/SIGINT (with SIGTERM, or a signal of the caller's choice for servers that are slow to
stop) and reaps it.
Our Swift launcher watches the lifeline itself (``lifeline="self"``).

The pieces live in their own modules, all re-exported here:

- :mod:`tests.servers._server_process`: :class:`ServerProcess`, :func:`stop_all`, :func:`tail`;
- :mod:`tests.servers._single_server`: :class:`SingleProcessServer`, :class:`PortTaken`;
- :mod:`tests.servers._procfs`: :func:`group_members` and other /proc look-ups;
- :mod:`tests.servers._leash`: the leash script (standard library only: it is run by path).
"""

from __future__ import annotations

from tests.servers._leash import _LEASH_GRACE as _LEASH_GRACE
from tests.servers._leash import LIFELINE_ENV
from tests.servers._leash import _leash as _leash
from tests.servers._procfs import _listening_inodes as _listening_inodes
from tests.servers._procfs import _readlink as _readlink
from tests.servers._procfs import _wait_exited as _wait_exited
from tests.servers._procfs import group_members
from tests.servers._server_process import BIND_ERROR_MARKERS as BIND_ERROR_MARKERS
from tests.servers._server_process import ServerProcess, find_free_port, stop_all, tail
from tests.servers._single_server import START_ATTEMPTS, PortTaken, SingleProcessServer

__all__ = ["LIFELINE_ENV", "PortTaken", "START_ATTEMPTS", "ServerProcess", "SingleProcessServer", "find_free_port",
           "group_members", "stop_all", "tail"]
