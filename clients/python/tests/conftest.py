"""Test harness: a private redis-server and the real gateway binary.

Both run on free loopback ports for the whole session (never a Redis the
user already runs), are started and stopped here, and every test uses
stream names of its own, so tests do not see each other's data. Tests wait
for conditions by polling with a deadline (``wait_until``), never by
sleeping for a guessed time.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Callable, Iterator, Optional, TypeVar

import pytest

import streamgate

REPO = Path(__file__).resolve().parents[3]
T = TypeVar("T")


def wait_until(what: str, probe: Callable[[], Optional[T]], timeout: float = 15.0) -> T:
    """Polls ``probe`` until it returns something truthy; fails naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A throwaway redis-server without persistence."""

    def __init__(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.fail("redis-server not found: install it (apt-get install redis-server)")
        self.port = free_port()
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(f"redis-server on port {self.port}", self._pong, timeout=10)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def _pong(self) -> bool:
        if self.proc.poll() is not None:
            pytest.fail(f"redis-server exited with {self.proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def gateway_binary() -> str:
    path = Path(os.environ.get("STREAMGATE_BIN", REPO / "target" / "debug" / "streamgate"))
    if not path.is_file():
        pytest.fail(f"gateway binary {path} not found: run `cargo build` or set STREAMGATE_BIN")
    return str(path)


class Gateway:
    """The streamgate binary serving ``redis_url``.

    ``listen`` defaults to port 0; the bound address comes from the
    ``listening on ADDR`` line the gateway prints once it accepts calls, the
    Prometheus endpoint's (on a port of its own) from ``metrics on ADDR``.
    Its log goes to a file that is shown when startup fails.
    """

    def __init__(self, redis_url: str, listen: str = "127.0.0.1:0", timeout: float = 15) -> None:
        self.log = tempfile.NamedTemporaryFile(prefix="streamgate-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            [gateway_binary(), "serve", "--listen", listen, "--redis-url", redis_url,
             "--metrics-listen", "127.0.0.1:0"],
            stdout=subprocess.PIPE,
            stderr=self.log,
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        out = b""
        while (addrs := self._addresses(out)) is None:
            remaining = deadline - time.monotonic()
            ready, _, _ = select.select([self.proc.stdout], [], [], max(remaining, 0))
            chunk = self.proc.stdout.read1(256) if ready else b""  # type: ignore[attr-defined]
            if not chunk:
                self.proc.kill()
                log = Path(self.log.name).read_text(errors="replace")
                pytest.fail(f"gateway did not report its address; log:\n{log}")
            out += chunk
        self.addr, self.metrics_addr = addrs

    @staticmethod
    def _addresses(out: bytes) -> Optional[tuple[str, str]]:
        """The addresses of complete ``listening on`` and ``metrics on``
        lines, once both are printed."""
        found: dict[str, str] = {}
        for line in out.decode(errors="replace").splitlines(keepends=True):
            for prefix in ("listening on ", "metrics on "):
                if line.startswith(prefix) and line.endswith("\n"):
                    found[prefix] = line.removeprefix(prefix).strip()
        if len(found) < 2:
            return None
        return found["listening on "], found["metrics on "]

    def metric(self, sample: str) -> float:
        """The value of one sample of the gateway's /metrics, e.g.
        ``streamgate_rpc_requests_total{rpc="ProduceStream",code="Ok"}``;
        0 when absent (a counter not incremented yet)."""
        with urllib.request.urlopen(f"http://{self.metrics_addr}/metrics", timeout=10) as reply:
            text = reply.read().decode()
        for line in text.splitlines():
            name, _, value = line.rpartition(" ")
            if name == sample:
                return float(value)
        return 0.0

    def terminate(self) -> None:
        """SIGTERM (graceful shutdown) and wait for the exit."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                pytest.fail("gateway did not exit within 30 s of SIGTERM")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def gateway(redis_server: RedisServer) -> Iterator[Gateway]:
    gw = Gateway(redis_server.url)
    yield gw
    gw.terminate()


@pytest.fixture
def client(gateway: Gateway) -> Iterator[streamgate.Client]:
    with streamgate.Client(gateway.addr, timeout=10) as c:
        yield c


@pytest.fixture
def stream(request: pytest.FixtureRequest) -> str:
    """A stream name no other test uses."""
    return f"{request.node.name}-{uuid.uuid4().hex[:8]}"
