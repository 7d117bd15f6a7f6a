"""The Swift API as the test cluster's tests use it: tempauth tokens, authenticated requests,
container helpers (:class:`SwiftAPI`, mixed into :class:`~tests.servers.swift.SwiftServer`),
over plain ``http.client``."""

from __future__ import annotations

import http.client
import json
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

__all__ = ["HTTPResult", "SwiftAPI"]


@dataclass(frozen=True)
class HTTPResult:
    """A finished HTTP exchange: status, headers (lower-case names) and the whole body."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> object:
        return json.loads(self.body)


class SwiftAPI:
    """Authenticated requests to the account of a running cluster (mixed into ``SwiftServer``,
    which provides the credentials, ``proxy_url`` and ``storage_url``)."""

    account: str
    user: str
    key: str
    _token: str | None
    proxy_url: str
    storage_url: str

    def auth(self) -> tuple[str, str, int]:
        """A fresh tempauth token: ``(token, storage_url, seconds_until_expiry)``."""
        result = _http("GET", self.proxy_url, "/auth/v1.0",
                       {"X-Auth-User": self.user, "X-Auth-Key": self.key})
        token = result.headers.get("x-auth-token")
        if result.status // 100 != 2 or not token:
            raise RuntimeError(f"tempauth failed: {result.status} {result.body[:200]!r}")
        expires = int(result.headers.get("x-auth-token-expires", "86400"))
        return token, result.headers.get("x-storage-url", self.storage_url), expires

    def token(self, *, refresh: bool = False) -> str:
        """A tempauth token, cached until ``refresh`` (tokens live 24 h in memcached)."""
        if refresh or self._token is None:
            self._token = self.auth()[0]
        return self._token

    def request(self, method: str, path: str = "", *, params: Mapping[str, str] | None = None,
                headers: Mapping[str, str] | None = None, body: bytes | None = None,
                timeout: float = 30.0) -> HTTPResult:
        """One authenticated Swift API request; ``path`` is relative to the account
        (``""``, ``"container"``, ``"container/object"``) and gets percent-quoted."""
        url_path = f"/v1/{self.account}"
        if path:
            url_path += "/" + urllib.parse.quote(path)
        if params:
            url_path += "?" + urllib.parse.urlencode(params)
        for attempt in (0, 1):
            all_headers = {"X-Auth-Token": self.token(refresh=attempt == 1), **(headers or {})}
            result = _http(method, self.proxy_url, url_path, all_headers, body, timeout)
            if result.status != 401:
                break
        return result

    def create_container(self, name: str) -> None:
        result = self.request("PUT", name)
        if result.status not in (201, 202):
            raise RuntimeError(f"PUT container {name}: {result.status} {result.body[:200]!r}")

    def list_containers(self, prefix: str = "") -> list[str]:
        return [c["name"] for c in self._listing("", prefix)]

    def list_objects(self, container: str, prefix: str = "") -> list[str]:
        return [o["name"] for o in self._listing(container, prefix)]

    def delete_container(self, name: str) -> None:
        """Delete container ``name`` with every object in it (bulk delete); no error if it
        does not exist."""
        while True:
            names = self.list_objects(name)
            if not names:
                break
            listing = "\n".join(urllib.parse.quote(f"/{name}/{obj}") for obj in names)
            result = self.request("POST", params={"bulk-delete": "1"}, body=listing.encode(),
                                  headers={"Content-Type": "text/plain",
                                           "Accept": "application/json"})
            report = result.json() if result.status == 200 else {}
            if result.status != 200 or report.get("Errors"):  # type: ignore[union-attr]
                raise RuntimeError(f"bulk delete in {name}: {result.status} {result.body!r}")
        result = self.request("DELETE", name)
        if result.status not in (204, 404):
            raise RuntimeError(f"DELETE container {name}: {result.status} {result.body[:200]!r}")

    def _listing(self, path: str, prefix: str) -> Iterator[dict[str, object]]:
        marker = ""
        while True:
            params = {"format": "json", "prefix": prefix, "marker": marker}
            result = self.request("GET", path, params=params)
            if result.status == 404:
                return
            if result.status not in (200, 204):
                raise RuntimeError(f"GET {path!r}: {result.status} {result.body[:200]!r}")
            page = json.loads(result.body or b"[]")
            if not page:
                return
            yield from page
            marker = page[-1]["name"]


def _http(method: str, base_url: str, path: str, headers: Mapping[str, str] | None = None,
          body: bytes | None = None, timeout: float = 30.0) -> HTTPResult:
    parsed = urllib.parse.urlsplit(base_url)
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=dict(headers or {}))
        response = conn.getresponse()
        data = response.read()
        return HTTPResult(response.status,
                          {k.lower(): v for k, v in response.getheaders()}, data)
    finally:
        conn.close()


def _healthy(port: int) -> bool:
    try:
        return _http("GET", f"http://127.0.0.1:{port}", "/healthcheck", timeout=1).status == 200
    except (OSError, http.client.HTTPException):
        return False
