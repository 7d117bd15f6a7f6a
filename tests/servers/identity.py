"""A minimal Rackspace identity (Keystone v2.0 + RAX-KSKEY) in front of the local Swift.

libcloud's Rackspace Cloud Files driver (``Provider.CLOUDFILES``) authenticates with
``POST /v2.0/tokens`` and a body ``{"auth": {"RAX-KSKEY:apiKeyCredentials": {"username": U,
"apiKey": K}}}``, then looks up, in the returned ``serviceCatalog``, exactly one
``cloudFiles`` endpoint (type ``object-store``) and exactly one ``cloudFilesCDN`` endpoint (type
``rax:object-cdn``) for its region (upper-cased), and sends its Swift requests to the first's
``publicURL`` (``internalURL`` with ``use_internal_url=True``) with the token as
``X-Auth-Token``. This server answers that call with a token obtained from the local Swift's
tempauth and both endpoints pointing at the Swift storage URL, so the *unmodified* driver talks
to a real Swift::

    from libcloud.storage.providers import Provider, get_driver

    driver = get_driver(Provider.CLOUDFILES)(
        identity.username, identity.api_key,   # user name, API key
        region="dfw",                          # any case; must match identity.region
        ex_force_auth_url=identity.auth_url,   # "http://127.0.0.1:PORT" -- no path
        ex_force_auth_version="2.0",           # the driver's default; "2.0_apikey" works too
    )

(:meth:`RackspaceIdentity.libcloud_kwargs` returns exactly these.) Notes from libcloud 3.9's
source (``libcloud/common/openstack_identity.py``, ``libcloud/storage/drivers/cloudfiles.py``):

- ``ex_force_auth_url`` must be the bare server URL: the driver appends ``/v2.0/tokens``
  itself when the URL has no path (with a path, the path is used as is).
- ``secure=False`` is not needed: http/https for both the identity and the storage requests
  comes from the URLs' schemes (passing it does no harm).
- The response needs ``Content-Type: application/json`` (otherwise "Missing content-type
  header"), ``access.token.id`` and ``access.token.expires`` (ISO 8601, parsed with
  ``libcloud.utils.iso8601.parse_date``; the token is reused until 5 s before it), and
  ``access.serviceCatalog``; ``access.user`` is optional (kept as ``auth_user_info``); tenant
  and roles are not read. A 401 becomes ``InvalidCredsError``.
- Several endpoints matching one (type, name, region, public/internal) raise
  ``ValueError("Found more than 1 matching endpoint")``; none raise "Could not find specified
  endpoint". So the catalog holds one endpoint per service and region.
- The token expiry we report is tempauth's (``X-Auth-Token-Expires``, 24 h by default).
"""

from __future__ import annotations

import datetime
import json
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.servers.swift import SwiftServer

__all__ = ["RackspaceIdentity"]


class RackspaceIdentity:
    """Threaded stdlib HTTP server on 127.0.0.1 (free port) answering ``POST /v2.0/tokens``.

    ``token_requests`` counts successful authentications (to check token reuse);
    ``failed_requests`` counts rejected ones. :meth:`stop` is idempotent.
    """

    def __init__(self, swift: SwiftServer, username: str = "rackuser",
                 api_key: str = "rack-api-key", region: str = "DFW") -> None:
        self.swift = swift
        self.username = username
        self.api_key = api_key
        self.region = region.upper()
        self.token_requests = 0
        self.failed_requests = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("RackspaceIdentity is not started")
        return int(self._server.server_address[1])

    @property
    def auth_url(self) -> str:
        """Pass as ``ex_force_auth_url`` (no path: libcloud adds ``/v2.0/tokens``)."""
        return f"http://127.0.0.1:{self.port}"

    def libcloud_kwargs(self) -> dict[str, str]:
        """Constructor arguments for ``get_driver(Provider.CLOUDFILES)(**kwargs)``."""
        return {
            "key": self.username,
            "secret": self.api_key,
            "region": self.region.lower(),
            "ex_force_auth_url": self.auth_url,
            "ex_force_auth_version": "2.0",
        }

    def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("RackspaceIdentity already started")
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        server.daemon_threads = True
        server.identity = self  # type: ignore[attr-defined]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="rackspace-identity", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=10)

    def __enter__(self) -> RackspaceIdentity:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ the answer
    def access_document(self, token: str, storage_url: str, expires_in: int) -> dict[str, Any]:
        """The ``access`` reply for a Swift token (shape of Rackspace's identity v2.0)."""
        expires = (datetime.datetime.now(datetime.UTC)
                   + datetime.timedelta(seconds=expires_in))
        tenant = self.swift.account
        endpoint = {"region": self.region, "tenantId": tenant,
                    "publicURL": storage_url, "internalURL": storage_url}
        return {"access": {
            "token": {
                "id": token,
                "expires": expires.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                "tenant": {"id": tenant, "name": tenant},
                "RAX-AUTH:authenticatedBy": ["APIKEY"],
            },
            "user": {
                "id": "10001",
                "name": self.username,
                "RAX-AUTH:defaultRegion": self.region,
                "roles": [{"id": "6", "name": "object-store:default",
                           "description": "Object store default role"}],
            },
            "serviceCatalog": [
                {"name": "cloudFiles", "type": "object-store", "endpoints": [dict(endpoint)]},
                {"name": "cloudFilesCDN", "type": "rax:object-cdn",
                 "endpoints": [dict(endpoint)]},
            ],
        }}

    def _authenticate(self, body: bytes) -> tuple[int, dict[str, Any]]:
        try:
            creds = json.loads(body)["auth"]["RAX-KSKEY:apiKeyCredentials"]
            username, api_key = creds["username"], creds["apiKey"]
        except (ValueError, KeyError, TypeError):
            return 400, {"badRequest": {"code": 400, "message": "Invalid json request body"}}
        if (username, api_key) != (self.username, self.api_key):
            with self._lock:
                self.failed_requests += 1
            return 401, {"unauthorized": {"code": 401,
                                          "message": "Username or api key is invalid."}}
        try:
            token, storage_url, expires_in = self.swift.auth()
        except (OSError, RuntimeError) as exc:
            return 503, {"serviceUnavailable": {"code": 503,
                                                "message": f"Swift unavailable: {exc}"}}
        with self._lock:
            self.token_requests += 1
        return 200, self.access_document(token, storage_url, expires_in)


class _Handler(BaseHTTPRequestHandler):
    server_version = "backupd-test-identity/1.0"
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        if self.path.split("?", 1)[0].rstrip("/") != "/v2.0/tokens":
            self._reply(404, {"itemNotFound": {"code": 404, "message": "Resource not found"}})
            return
        identity: RackspaceIdentity = self.server.identity  # type: ignore[attr-defined]
        self._reply(*identity._authenticate(body))

    def do_GET(self) -> None:
        self._reply(404, {"itemNotFound": {"code": 404, "message": "Resource not found"}})

    def _reply(self, status: int, document: dict[str, Any]) -> None:
        data = json.dumps(document).encode()
        self.send_response(status, HTTPStatus(status).phrase)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass
