"""Starts one Warren node for the session (or uses $WARREN_TEST_URL) and gives tests its URL."""
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlparse

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _warren_bin():
    if os.environ.get("WARREN_BIN"):
        return os.environ["WARREN_BIN"]
    target = os.environ.get("CARGO_TARGET_DIR", str(ROOT / "target"))
    return str(Path(target) / "debug" / "warren")


def _wait_for_port(port, proc, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"warren exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port} after {timeout}s")


@pytest.fixture(scope="session")
def amqp_url():
    external = os.environ.get("WARREN_TEST_URL")
    if external:
        yield external
        return
    binary = _warren_bin()
    if not os.path.exists(binary):
        pytest.fail(f"warren binary not found at {binary}; build it or set WARREN_BIN")
    port = _free_port()
    data = tempfile.mkdtemp(prefix="warren-py-")
    log = open(Path(data) / "warren.log", "w")
    proc = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--data-dir", data],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_for_port(port, proc)
        yield f"amqp://guest:guest@127.0.0.1:{port}/"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        if proc.returncode not in (0, -signal.SIGTERM):
            sys.stderr.write((Path(data) / "warren.log").read_text())
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture
def port(amqp_url):
    return urlparse(amqp_url).port or 5672


@pytest.fixture
def name():
    """A unique name, so tests never collide on a shared broker."""
    return "t-" + uuid.uuid4().hex[:10]


class Program:
    """A seed program run as its own process, with the default port pointed at the broker."""

    def __init__(self, path, port, python=None):
        env = dict(os.environ)
        env["WARREN_PORT"] = str(port)
        env["PYTHONPATH"] = str(HERE / "shim")
        env["PYTHONUNBUFFERED"] = "1"
        self.proc = subprocess.Popen(
            [python or sys.executable, str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            cwd=str(Path(path).parent),
        )
        self.lines = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line)

    def wait_for(self, text, timeout=20):
        """Waits until an output line contains `text`."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if any(text in line for line in list(self.lines)):
                return
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not seen; output was:\n{''.join(self.lines)}")

    def finish(self, timeout=60):
        self.proc.wait(timeout=timeout)
        self._reader.join(timeout=5)
        return self.proc.returncode

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=5)


@pytest.fixture
def program(port):
    started = []

    def start(path, python=None):
        p = Program(HERE / "seeds" / path, port, python)
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()


@pytest.fixture
def legacy_python():
    """Python with pika 0.13 for programs written against pika's 0.x API."""
    return os.environ.get("WARREN_PY_LEGACY") or sys.executable
