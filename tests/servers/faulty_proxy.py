"""A loopback TCP proxy that fails the way a dead cloud region fails, for fault tests and benchmarks.

``FaultyProxy(upstream_port)`` listens on 127.0.0.1 and forwards to the upstream server (moto's
S3, say). Its ``mode`` can change at any time:

* ``pass``: forwards both ways.
* ``refuse``: nothing listens on its port any more (connection refused), as for a dead host.
* ``hang``: accepts connections and never answers, never reads (a region that hangs).
* ``stall``: forwards, but once a connection has sent the client ``stall_after`` bytes, stops
  sending (the connection stays open): a download that stalls mid-transfer. Small answers
  (listings, heads) still get through.
* ``error``: answers every request with ``503 Service Unavailable`` without forwarding (a flaky
  store), counting the requests it answered in ``requests``.

``connections`` counts accepted connections. Everything runs in daemon threads of the test
process; ``close()`` stops it and drops every connection.
"""

from __future__ import annotations

import socket
import threading
from contextlib import suppress

MODES = ("pass", "refuse", "hang", "stall", "error")


class FaultyProxy:
    def __init__(self, upstream_port: int, *, upstream_host: str = "127.0.0.1", mode: str = "pass",
                 stall_after: int = 256 * 1024):
        self.upstream = (upstream_host, upstream_port)
        self.stall_after = stall_after
        self.connections = 0
        self.requests = 0
        self._mode = "pass"
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self._closed = False
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self.mode = mode

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown proxy mode {mode!r} (one of {', '.join(MODES)})")
        with self._lock:
            self._mode = mode
        self._drop_connections()  # a new mode applies to new connections, as after a network change
        if mode == "refuse":
            self._stop_listening()
        else:
            self._listen()

    # ------------------------------------------------------------------ listening
    def _listen(self) -> None:
        with self._lock:
            if self._listener is not None or self._closed:
                return
            listener = socket.socket()
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", self.port))
            listener.listen(64)
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), name="faulty-proxy", daemon=True).start()

    def _stop_listening(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
        if listener is not None:
            with suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed
            with self._lock:
                self.connections += 1
                self._sockets.append(client)
                mode = self._mode
            if mode == "hang":
                continue  # held open, never read, never answered
            threading.Thread(target=self._serve, args=(client, mode), daemon=True).start()

    # ------------------------------------------------------------------ serving
    def _serve(self, client: socket.socket, mode: str) -> None:
        if mode == "error":
            self._answer_errors(client)
            return
        try:
            upstream = socket.create_connection(self.upstream, timeout=10)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        with self._lock:
            self._sockets.append(upstream)
        threading.Thread(target=self._pump, args=(client, upstream, None), daemon=True).start()
        self._pump(upstream, client, self.stall_after if mode == "stall" else None)

    def _pump(self, source: socket.socket, sink: socket.socket, stall_after: int | None) -> None:
        sent = 0
        try:
            while data := source.recv(65536):
                if stall_after is not None and sent + len(data) > stall_after:
                    sink.sendall(data[:max(0, stall_after - sent)])
                    return  # stop sending; the connection stays open until the mode changes
                sink.sendall(data)
                sent += len(data)
        except OSError:
            pass
        with suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def _answer_errors(self, client: socket.socket) -> None:
        """Read one request's head, answer 503 and close (the body, if any, is never read)."""
        head = b""
        try:
            while b"\r\n\r\n" not in head:
                data = client.recv(65536)
                if not data:
                    return
                head += data
            with self._lock:
                self.requests += 1
            client.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        except OSError:
            pass
        finally:
            client.close()

    # ------------------------------------------------------------------ teardown
    def _drop_connections(self) -> None:
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._stop_listening()
        self._drop_connections()

    def __enter__(self) -> FaultyProxy:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
