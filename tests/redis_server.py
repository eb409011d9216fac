"""A real redis-server on a free loopback port, started and stopped by PID (never by name)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

# PIDs of the servers the tests started: the leftover-process check in conftest knows them.
OWNED: set[int] = set()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def redis_server_path() -> str:
    """The redis-server binary; without it the test skips, except in CI, where it fails."""
    path = shutil.which("redis-server")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("redis-server is not installed (.ci/run installs it); these tests need a real server")
        pytest.skip("redis-server is not installed")
    return path


def make_tls_files(folder: str) -> dict[str, str]:
    """A throw-away CA and a server certificate for 127.0.0.1 (openssl; in CI its absence fails)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        if os.environ.get("CI") == "true":
            pytest.fail("openssl is not installed; the TLS test needs it")
        pytest.skip("openssl is not installed")
    files = {name: os.path.join(folder, f"{name}.pem") for name in ("ca", "ca_key", "cert", "key", "csr")}
    ext = os.path.join(folder, "ext.cnf")
    with open(ext, "w") as out:
        out.write("subjectAltName=IP:127.0.0.1\n")
    quiet = {"check": True, "capture_output": True, "timeout": 60}
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", files["ca_key"],
                    "-out", files["ca"], "-days", "2", "-subj", "/CN=liteyuki-test-ca",
                    # the extensions Python 3.13's strict verification (VERIFY_X509_STRICT) asks of a CA
                    "-addext", "basicConstraints=critical,CA:TRUE",
                    "-addext", "keyUsage=critical,keyCertSign,cRLSign"], **quiet)  # fmt: skip
    subprocess.run([openssl, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", files["key"],
                    "-out", files["csr"], "-subj", "/CN=127.0.0.1"], **quiet)  # fmt: skip
    subprocess.run([openssl, "x509", "-req", "-in", files["csr"], "-CA", files["ca"], "-CAkey", files["ca_key"],
                    "-CAcreateserial", "-out", files["cert"], "-days", "2", "-extfile", ext], **quiet)  # fmt: skip
    return files


class RedisServer:
    def __init__(self, port: int | None = None, tls: dict[str, str] | None = None) -> None:
        self.port = port or free_port()
        self.tls = tls  # make_tls_files(): then the server speaks TLS only
        self.proc: subprocess.Popen[bytes] | None = None
        self.dir = tempfile.mkdtemp(prefix="liteyuki-redis-")

    def url(self, db: int = 0) -> str:
        if self.tls is not None:
            return f"rediss://127.0.0.1:{self.port}/{db}?ssl_ca_certs={self.tls['ca']}"
        return f"redis://127.0.0.1:{self.port}/{db}"

    def _connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=1)
        if self.tls is None:
            return sock
        import ssl

        context = ssl.create_default_context(cafile=self.tls["ca"])
        return context.wrap_socket(sock, server_hostname="127.0.0.1")

    def start(self, timeout: float = 10.0) -> RedisServer:
        args = [redis_server_path(), "--bind", "127.0.0.1"]
        if self.tls is None:
            args += ["--port", str(self.port)]
        else:
            args += ["--port", "0", "--tls-port", str(self.port), "--tls-auth-clients", "no"]
            args += ["--tls-cert-file", self.tls["cert"], "--tls-key-file", self.tls["key"]]
            args += ["--tls-ca-cert-file", self.tls["ca"]]
        args += ["--save", "", "--appendonly", "no", "--dir", self.dir]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        OWNED.add(self.proc.pid)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:  # poll a real condition: the server answers PING
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode} (port {self.port} taken?)")
            try:
                with self._connect() as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                pass
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on port {self.port} within {timeout} s")

    def kill(self) -> None:
        """kill -9, as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        OWNED.discard(self.proc.pid)
        self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
