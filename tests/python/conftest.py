"""The broker under test, and helpers to run the seed programs against it.

`amqp_url` (session): $WARREN_TEST_URL when set (a broker already running, e.g. the reference
RabbitMQ), else a Warren node started for the session on a free loopback port with a fresh data
directory, stopped (SIGTERM, then SIGKILL) at the end.
"""
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

import pika
import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
SEEDS = HERE / "seeds"
START_TIMEOUT = 30


def _free_port():
    """A free loopback port, never AMQP's or RabbitMQ's usual ones (5600-5700, 15672-15674)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if not (5600 <= port <= 5700 or 15672 <= port <= 15674):
            return port


def _warren_candidates():
    if os.environ.get("WARREN_BIN"):
        return [Path(os.environ["WARREN_BIN"])]
    found = []
    if os.environ.get("CARGO_TARGET_DIR"):
        found.append(Path(os.environ["CARGO_TARGET_DIR"]) / "debug" / "warren")
    found.append(ROOT / "target" / "debug" / "warren")
    return found


def _wait_for_port(port, proc, log_path):
    deadline = time.time() + START_TIMEOUT
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"warren exited with status {proc.returncode} before listening:\n"
                        f"{Path(log_path).read_text()}", pytrace=False)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"warren did not accept connections on 127.0.0.1:{port} within "
                f"{START_TIMEOUT}s:\n{Path(log_path).read_text()}", pytrace=False)


@pytest.fixture(scope="session")
def amqp_url():
    external = os.environ.get("WARREN_TEST_URL")
    if external:
        yield external
        return
    candidates = _warren_candidates()
    binary = next((b for b in candidates if b.is_file() and os.access(b, os.X_OK)), None)
    if binary is None:
        pytest.fail("warren binary not found (looked at: "
                    + ", ".join(str(c) for c in candidates)
                    + "); run `cargo build -p warren`, set WARREN_BIN, or set WARREN_TEST_URL "
                    "to test a running broker", pytrace=False)
    port = _free_port()
    data = tempfile.mkdtemp(prefix="warren-py-")
    log_path = Path(data) / "warren.log"
    log = open(log_path, "w")
    proc = subprocess.Popen(
        [str(binary), "--bind", "127.0.0.1", "--port", str(port), "--data-dir", str(Path(data) / "data")],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_for_port(port, proc, log_path)
        yield f"amqp://guest:guest@127.0.0.1:{port}/"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
        if proc.returncode not in (0, -signal.SIGTERM):
            sys.stderr.write(f"warren exited with {proc.returncode}; its log:\n{log_path.read_text()}")
        shutil.rmtree(data, ignore_errors=True)


def broker_address(url):
    """(host, port) of an amqp:// URL, for programs configured by host and port."""
    parsed = urlparse(url)
    return parsed.hostname or "localhost", parsed.port or 5672


@pytest.fixture(scope="session")
def broker_host(amqp_url):
    return broker_address(amqp_url)[0]


@pytest.fixture(scope="session")
def broker_port(amqp_url):
    return broker_address(amqp_url)[1]


@pytest.fixture(scope="session")
def seed_env(amqp_url):
    """The environment the seed programs read their broker from (WARREN_HOST, WARREN_PORT)."""
    host, port = broker_address(amqp_url)
    return {"WARREN_HOST": host, "WARREN_PORT": str(port)}


@pytest.fixture
def name():
    """A unique name, so tests never collide on a shared broker."""
    return "t-" + uuid.uuid4().hex[:10]


@pytest.fixture
def connect(amqp_url):
    """Opens pika BlockingConnections to the broker; closes those still open after the test."""
    opened = []

    def open_():
        conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
        opened.append(conn)
        return conn

    yield open_
    for conn in opened:
        if conn.is_open:
            try:
                conn.close()
            except Exception:
                pass


class Program:
    """A seed program run as its own process; its output lines are collected as they come."""

    def __init__(self, path, python, env, args=()):
        self.path = path
        self.proc = subprocess.Popen(
            [python, str(path), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
            cwd=str(Path(path).parent),
        )
        self.lines = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self):
        return "\n".join(self.lines)

    def wait_for(self, text, timeout=20, count=1):
        """Waits until `count` output lines contain `text`."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if sum(text in line for line in list(self.lines)) >= count:
                return
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"{Path(self.path).name}: {text!r} not seen {count}x within {timeout}s "
                             f"(exit status {self.proc.poll()}); output:\n{self.output}")

    def finish(self, timeout=30):
        """Waits for the program to exit by itself; returns its exit status."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(f"{Path(self.path).name} still running after {timeout}s; "
                                 f"output:\n{self.output}")
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


@pytest.fixture(scope="session")
def legacy_python():
    """The Python of the pika 0.13 venv, for programs written against pika's 0.x API."""
    python = os.environ.get("WARREN_PY_LEGACY")
    if not python or not os.path.exists(python):
        pytest.fail("WARREN_PY_LEGACY (a Python with pika==0.13.1) is not set; run the tests "
                    "through tests/python/run.sh", pytrace=False)
    return python


@pytest.fixture
def program(seed_env):
    """program("pika_blog/notify.py", python=None, args=(), env={}) starts a seed program with
    WARREN_HOST/WARREN_PORT pointing at the broker; every one still running is stopped after the
    test."""
    started = []

    def start(path, python=None, args=(), env=None):
        full_env = dict(os.environ, PYTHONUNBUFFERED="1", **seed_env, **(env or {}))
        p = Program(SEEDS / path, python or sys.executable, full_env, args)
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()

