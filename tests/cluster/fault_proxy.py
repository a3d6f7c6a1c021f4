"""A TLS proxy in front of the real API server that fails chosen requests.

Everything else is passed through unchanged with the admin credentials, so a
task run through it meets a real API server except for the faults we inject:
that is how a 5xx or 429 on one read is produced without mocking kr8s.
"""

from __future__ import annotations

import re
import ssl
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import yaml

from registry_provisioner.certificates import self_signed_ca_and_server_cert

_HOP_BY_HOP = {"connection", "transfer-encoding", "keep-alive", "content-length", "host"}


@dataclass
class Fault:
    """Answer `status` to requests whose method matches and whose path matches `path`."""

    method: str
    path: str
    status: int
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        return method == self.method and re.fullmatch(self.path, path.split("?")[0]) is not None


@dataclass
class FaultProxy:
    kubeconfig: Path
    faults: list[Fault] = field(default_factory=list)


def _upstream(kubeconfig: Path) -> httpx.Client:
    config = yaml.safe_load(kubeconfig.read_text())
    cluster = config["clusters"][0]["cluster"]
    user = config["users"][0]["user"]
    context = ssl.create_default_context(cafile=cluster["certificate-authority"])
    context.load_cert_chain(user["client-certificate"], user["client-key"])
    return httpx.Client(base_url=cluster["server"], verify=context, timeout=60)


def _handler(upstream: httpx.Client, faults: list[Fault]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # quiet: pytest shows failures itself
            pass

        def _relay(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            for fault in faults:
                if fault.matches(self.command, self.path):
                    fault.hits += 1
                    self._answer(fault.status, b'{"kind":"Status","message":"injected fault"}')
                    return
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            response = upstream.request(self.command, self.path, content=body, headers=headers)
            self._answer(response.status_code, response.content, response.headers)

        def _answer(self, status: int, body: bytes, headers: httpx.Headers | None = None) -> None:
            self.send_response(status)
            for key, value in (headers or {"Content-Type": "application/json"}).items():
                if key.lower() not in _HOP_BY_HOP and key.lower() != "content-encoding":
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _relay

    return Handler


@contextmanager
def fault_proxy(kubeconfig: Path, faults: list[Fault]) -> Iterator[FaultProxy]:
    """Serve on a loopback port; yields a kubeconfig that points at the proxy."""
    ca_pem, cert_pem, key_pem = self_signed_ca_and_server_cert([], ["127.0.0.1"])
    with tempfile.TemporaryDirectory(prefix="fault-proxy-") as tmp, _upstream(kubeconfig) as up:
        directory = Path(tmp)
        for name, pem in (("ca.crt", ca_pem), ("tls.crt", cert_pem), ("tls.key", key_pem)):
            (directory / name).write_text(pem)
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(up, faults))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(directory / "tls.crt", directory / "tls.key")
        server.socket = context.wrap_socket(server.socket, server_side=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        config = yaml.safe_load(kubeconfig.read_text())
        cluster = config["clusters"][0]["cluster"]
        cluster["server"] = f"https://127.0.0.1:{server.server_address[1]}"
        cluster["certificate-authority"] = str(directory / "ca.crt")
        proxied = directory / "kubeconfig"
        proxied.write_text(yaml.safe_dump(config))
        try:
            yield FaultProxy(proxied, faults)
        finally:
            server.shutdown()
            server.server_close()
            thread.join()
