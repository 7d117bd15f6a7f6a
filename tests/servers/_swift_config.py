"""Configuration files of a one-node Swift test cluster (see :mod:`tests.servers.swift`):
``swift.conf``, the ring spec ``rings.json`` (the launcher builds the rings from it) and one
paste-deploy config per server."""

from __future__ import annotations

import json
import os
import pwd
from pathlib import Path

__all__ = ["BACKENDS", "PROXY_PIPELINE", "SERVERS", "write_config"]

PROXY_PIPELINE = (
    "catch_errors gatekeeper healthcheck proxy-logging cache listing_formats bulk tempurl "
    "s3api tempauth copy slo dlo versioned_writes symlink proxy-logging proxy-server"
)
BACKENDS = ("account", "container", "object")
SERVERS = (*BACKENDS, "proxy")


def write_config(etc: Path, devices_dir: Path, ports: dict[str, int]) -> None:
    """Write every config file into ``etc`` for the servers' ``ports`` (memcached's too)."""
    _write(etc / "swift.conf", _SWIFT_CONF)
    _write(etc / "rings.json", json.dumps({
        "part_power": 6, "replicas": 1, "min_part_hours": 1, "ip": "127.0.0.1",
        "device": "d1", "ports": {name: ports[name] for name in BACKENDS},
    }, sort_keys=True) + "\n")
    user = pwd.getpwuid(os.geteuid()).pw_name
    for name in SERVERS:
        common = _DEFAULT_SECTION.format(
            port=ports[name], user=user, swift_dir=etc, devices=devices_dir,
            name=name)
        if name == "proxy":
            body = _PROXY_CONF.format(pipeline=PROXY_PIPELINE,
                                      memcached=ports["memcached"])
        else:
            body = _BACKEND_CONF.format(name=name)
        _write(etc / f"{name}-server.conf", common + body)


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


_SWIFT_CONF = """\
[swift-hash]
swift_hash_path_prefix = backupd-testbed-prefix
swift_hash_path_suffix = backupd-testbed-suffix

[storage-policy:0]
name = Policy-0
default = yes
"""

_DEFAULT_SECTION = """\
[DEFAULT]
bind_ip = 127.0.0.1
bind_port = {port}
bind_timeout = 3
workers = 0
user = {user}
swift_dir = {swift_dir}
devices = {devices}
mount_check = false
disable_fallocate = true
fallocate_reserve = 0
log_name = {name}
log_level = INFO

"""

_BACKEND_CONF = """\
[pipeline:main]
pipeline = healthcheck {name}-server

[app:{name}-server]
use = egg:swift#{name}

[filter:healthcheck]
use = egg:swift#healthcheck
"""

_PROXY_CONF = """\
[pipeline:main]
pipeline = {pipeline}

[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true

[filter:catch_errors]
use = egg:swift#catch_errors

[filter:gatekeeper]
use = egg:swift#gatekeeper

[filter:healthcheck]
use = egg:swift#healthcheck

[filter:proxy-logging]
use = egg:swift#proxy_logging

[filter:cache]
use = egg:swift#memcache
memcache_servers = 127.0.0.1:{memcached}

[filter:listing_formats]
use = egg:swift#listing_formats

[filter:bulk]
use = egg:swift#bulk

[filter:tempurl]
use = egg:swift#tempurl

[filter:s3api]
use = egg:swift#s3api
location = us-east-1

[filter:tempauth]
use = egg:swift#tempauth
user_test_tester = testing .admin

[filter:copy]
use = egg:swift#copy

[filter:slo]
use = egg:swift#slo
allow_async_delete = false

[filter:dlo]
use = egg:swift#dlo

[filter:versioned_writes]
use = egg:swift#versioned_writes
allow_versioned_writes = true
allow_object_versioning = true

[filter:symlink]
use = egg:swift#symlink
"""
