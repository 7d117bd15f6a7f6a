"""Run one OpenStack Swift server with a private swift.conf (run by Swift's own interpreter).

    <swift-venv>/bin/python _swift_launcher.py {proxy|account|container|object} CONF_FILE

Swift reads ``swift.conf`` (hash prefix/suffix, storage policies, constraints) from the
hard-coded ``swift.common.utils.SWIFT_CONF_FILE`` (/etc/swift/swift.conf), at import time in
``swift.common.constraints`` and ``swift.common.storage_policy``. This launcher points that
constant at ``<swift_dir>/swift.conf`` (``swift_dir`` from CONF_FILE's [DEFAULT]), reloads
everything derived from it, then calls ``swift.common.wsgi.run_wsgi`` like ``swift-*-server -v``
does. Nothing under /etc is read or written.

Other changes to stock behaviour, all for a throwaway single-node test server:

- rings: if ``<swift_dir>/rings.json`` exists, the account/container/object rings are built
  from it (part power, replicas, one device per ring) unless identical ones are already there;
  a file lock makes the four servers, started in parallel, build them once;
- listen sockets without SO_REUSEPORT (eventlet sets it by default), so a port collision with
  another server fails loudly instead of silently sharing the port;
- no syslog handler (there is no /dev/log; Swift would fall back to UDP); logs go to stderr;
- lifeline: the read fd named by BACKUPD_TESTSERVER_LIFELINE_FD is watched by a native thread;
  EOF (the test process died or stopped us) ends the server.
"""

from __future__ import annotations

import configparser
import json
import logging
import os
import signal
import sys
import threading
import time

# Our own directory holds tests/servers/swift.py, which would shadow the ``swift`` package.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

LIFELINE_ENV = "BACKUPD_TESTSERVER_LIFELINE_FD"
SERVERS = ("proxy", "account", "container", "object")
RING_NAMES = ("account", "container", "object")


def _watch_lifeline() -> None:
    """Start a native thread that ends this process when the lifeline pipe reaches EOF."""
    fd_text = os.environ.pop(LIFELINE_ENV, None)
    if fd_text is None:
        return
    fd = int(fd_text)
    read, kill, getpid, exit_now = os.read, os.kill, os.getpid, os._exit  # before monkey patching

    def watch() -> None:
        try:
            while read(fd, 64):
                pass
        except OSError:
            pass
        kill(getpid(), signal.SIGTERM)
        time.sleep(5)
        exit_now(1)

    threading.Thread(target=watch, name="lifeline", daemon=True).start()


def _use_swift_conf(swift_conf: str) -> None:
    """Repoint Swift's hard-coded swift.conf path and reload what was read from it."""
    if not os.path.isfile(swift_conf):
        sys.exit(f"launcher: {swift_conf} does not exist")
    from swift.common import utils

    utils.SWIFT_CONF_FILE = swift_conf
    utils.HASH_PATH_PREFIX = b""
    utils.HASH_PATH_SUFFIX = b""
    utils.validate_hash_conf()  # raises if our file has no [swift-hash]
    from swift.common import constraints, storage_policy

    constraints.reload_constraints()
    storage_policy.reload_storage_policies()


def _no_syslog() -> None:
    from swift.common.utils import logs

    class NoSysLog(logging.NullHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__()

    logs.ThreadSafeSysLogHandler = NoSysLog  # looked up at call time by get_swift_logger


def _no_reuse_port() -> None:
    from swift.common import wsgi

    listen = wsgi.listen

    def listen_exclusive(*args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        kwargs["reuse_port"] = False
        return listen(*args, **kwargs)

    wsgi.listen = listen_exclusive


def _ensure_rings(swift_dir: str) -> None:
    """Build the three rings described by ``swift_dir/rings.json`` unless already built."""
    spec_path = os.path.join(swift_dir, "rings.json")
    if not os.path.exists(spec_path):
        return
    import fcntl

    with open(spec_path, encoding="utf-8") as f:
        spec_text = f.read()
    stamp_path = os.path.join(swift_dir, "rings.stamp")
    ring_paths = {name: os.path.join(swift_dir, f"{name}.ring.gz") for name in RING_NAMES}

    def current() -> bool:
        try:
            with open(stamp_path, encoding="utf-8") as f:
                stamp = f.read()
        except FileNotFoundError:
            return False
        return stamp == spec_text and all(os.path.exists(p) for p in ring_paths.values())

    if current():
        return
    with open(os.path.join(swift_dir, "rings.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if current():
            return
        from swift.common.ring import RingBuilder

        spec = json.loads(spec_text)
        for name, path in ring_paths.items():
            builder = RingBuilder(spec["part_power"], spec["replicas"], spec["min_part_hours"])
            builder.add_dev({
                "id": 0, "region": 1, "zone": 1, "ip": spec["ip"], "port": spec["ports"][name],
                "device": spec["device"], "weight": 1.0, "meta": "",
            })
            builder.rebalance()
            tmp = f"{path}.tmp.{os.getpid()}.gz"
            builder.get_ring().save(tmp)
            os.replace(tmp, path)
        tmp = f"{stamp_path}.tmp.{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(spec_text)
        os.replace(tmp, stamp_path)


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] not in SERVERS:
        print(f"usage: {argv[0]} {{{'|'.join(SERVERS)}}} CONF_FILE", file=sys.stderr)
        return 2
    server, conf_file = argv[1], os.path.abspath(argv[2])
    _watch_lifeline()
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(conf_file)
    swift_dir = parser.get("DEFAULT", "swift_dir", fallback="/etc/swift")
    _use_swift_conf(os.path.join(swift_dir, "swift.conf"))
    _no_syslog()
    _no_reuse_port()
    _ensure_rings(swift_dir)

    from swift.common.wsgi import run_wsgi

    kwargs: dict[str, object] = {"verbose": True}
    if server == "object":
        from swift.obj.server import global_conf_callback

        kwargs["global_conf_callback"] = global_conf_callback
    return int(run_wsgi(conf_file, f"{server}-server", **kwargs) or 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
