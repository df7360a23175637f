"""A TCP relay between a worker and PostgreSQL that a test can cut and restore.

`cut()` is a network partition as the worker sees it, without touching the shared server:
every open connection through the relay is closed (the server rolls back whatever they had
open), and a connection opened during the cut is accepted but relayed nowhere, so a client
waiting for the server's answer hangs, as it would on packets dropped by a partition.
`restore()` relays those waiting connections and new ones again.
"""

from __future__ import annotations

import socket
import threading


class TcpProxy:
    """Relays 127.0.0.1:`port` to `upstream`; one thread per direction per connection."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._flowing = threading.Event()
        self._flowing.set()
        self._closed = threading.Event()
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    def cut(self) -> None:
        self._flowing.clear()
        with self._lock:
            sockets, self._open = self._open, set()
        for sock in sockets:
            _close(sock)

    def restore(self) -> None:
        self._flowing.set()

    def close(self) -> None:
        self._closed.set()
        _close(self._listener)
        self.cut()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), name="proxy-conn", daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        while not self._flowing.wait(0.1):  # opened during a cut: no answer until restored
            if self._closed.is_set():
                _close(client)
                return
        try:
            server = socket.create_connection(self.upstream, timeout=10)
            server.settimeout(None)
        except OSError:
            _close(client)
            return
        with self._lock:
            self._open.update((client, server))
        for source, target in ((client, server), (server, client)):
            threading.Thread(target=_pump, args=(source, target), name="proxy-pump", daemon=True).start()


def _pump(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            target.sendall(data)
    except OSError:
        pass
    finally:
        _close(source)
        _close(target)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
