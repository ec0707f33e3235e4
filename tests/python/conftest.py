"""The broker under test, and helpers to run the seed programs against it.

The broker is one Warren node or a cluster of several, chosen by the environment:
* `WARREN_TEST_URL`: a broker already running (e.g. the reference RabbitMQ), or a cluster already
  running as comma-separated URLs, one per node (e.g. the three of `cluster/local up`);
* `WARREN_TEST_STOMP` with `WARREN_TEST_URL`: the STOMP address of each node of that broker,
  `host:port[,host:port...]` (STOMP tests skip against an external broker without it);
* `WARREN_TEST_MQTT` with `WARREN_TEST_URL`: the MQTT address of each node of that broker, in the
  same form (MQTT tests skip against an external broker without it). `WARREN_TEST_URL=none` with
  `WARREN_TEST_MQTT` is a broker with no AMQP side (e.g. mosquitto as the MQTT 5 reference):
  every test that asks for an AMQP connection (`connect`, `node_url`, `program`) is skipped;
* otherwise `WARREN_TEST_NODES` (default 1) Warren nodes started for the session on free loopback
  ports (AMQP, management, STOMP, MQTT) with fresh data directories, formed into one cluster when
  there are several (ids 1..N, the same `--member` list on each, mutual TLS between them with
  certificates from `warren cert`), ready once every node names the same leader and serves a
  declare;
  stopped (SIGTERM, then SIGKILL) at the end of the session, also when tests fail, and sent
  SIGTERM by the kernel if the test process itself dies (PR_SET_PDEATHSIG).

Client connections are spread over the nodes: each new connection a test opens (`connect()`,
`node_url()`, `stomp_address()`, `mqtt_address()`, every seed program it starts) goes to the next
node, round-robin, and each test starts one node further than the one before. So in a cluster the
publishers, consumers and RPC servers of one test sit on different nodes, and tests with a single
connection use every node. Each connection's node is printed, which pytest shows with a failure.
"""
import ctypes
import itertools
import os
import re
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
START_ATTEMPTS = 3


def _free_ports(count):
    """`count` distinct free loopback ports, never AMQP's or RabbitMQ's usual ones (5600-5700,
    15672-15674). Another process may take one before the node binds it: callers retry."""
    sockets, ports = [], []
    try:
        while len(ports) < count:
            s = socket.socket()
            sockets.append(s)
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            if not (5600 <= port <= 5700 or 15672 <= port <= 15674):
                ports.append(port)
    finally:
        for s in sockets:
            s.close()
    return ports


def _warren_candidates():
    if os.environ.get("WARREN_BIN"):
        return [Path(os.environ["WARREN_BIN"])]
    found = []
    if os.environ.get("CARGO_TARGET_DIR"):
        found.append(Path(os.environ["CARGO_TARGET_DIR"]) / "debug" / "warren")
    found.append(ROOT / "target" / "debug" / "warren")
    return found


def warren_binary():
    candidates = _warren_candidates()
    binary = next((b for b in candidates if b.is_file() and os.access(b, os.X_OK)), None)
    if binary is None:
        pytest.fail("warren binary not found (looked at: "
                    + ", ".join(str(c) for c in candidates)
                    + "); run `cargo build -p warren`, set WARREN_BIN, or set WARREN_TEST_URL "
                    "to test a running broker", pytrace=False)
    return binary


def _die_with_parent():
    """Runs in a node's process before exec: the kernel sends it SIGTERM when the test process
    dies, however it dies (Linux PR_SET_PDEATHSIG; elsewhere nothing)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


class Node:
    """One `warren` process on loopback with its own data directory and log file."""

    def __init__(self, binary, workdir, node_id, amqp_port, grpc_port, flags, certs=None,
                 bind="127.0.0.1", management_port=0, stomp_port=0, mqtt_port=0):
        self.id = node_id
        self.binary = binary
        # The cluster's certificates (mutual TLS between nodes): this node's directory, and the
        # operator's for `warren status`.
        self.certs = certs
        if certs:
            flags = [*flags, "--certs-dir", str(certs / f"node{node_id}")]
        self.grpc = f"127.0.0.1:{grpc_port}" if grpc_port else None
        host = f"[{bind}]" if ":" in bind else bind
        self.url = f"amqp://guest:guest@{host}:{amqp_port}/"
        # The management API (HTTP, guest from loopback), when the node serves one.
        self.management = f"http://{host}:{management_port}" if management_port else None
        self.host = bind
        self.port = amqp_port
        # The STOMP listener's port (0: none).
        self.stomp_port = stomp_port
        # The MQTT listener's port (0: none).
        self.mqtt_port = mqtt_port
        self.data_dir = Path(workdir) / f"node{node_id}"
        self.log_path = Path(workdir) / f"node{node_id}.log"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [str(binary), "--node-id", str(node_id), "--bind", bind, "--port", str(amqp_port),
             "--data-dir", str(self.data_dir), "--management-port", str(management_port),
             "--stomp-port", str(stomp_port), "--mqtt-port", str(mqtt_port), *flags],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )

    def log(self):
        return self.log_path.read_text(errors="replace")

    def listening(self, deadline):
        """True once the AMQP port accepts connections; False if the node exited first (e.g. a
        port was taken meanwhile); fails the session at the deadline."""
        while time.time() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return True
            except OSError:
                time.sleep(0.1)
        pytest.fail(f"warren node {self.id} did not accept connections on 127.0.0.1:{self.port} "
                    f"within {START_TIMEOUT}s:\n{self.log()}", pytrace=False)

    def status(self):
        """This node's view from `warren status`: {"state", "term", "leader", "last_log",
        "committed", "applied"} (None for a value it does not know), or None if it did not answer."""
        try:
            out = subprocess.run([str(self.binary), "status", "--grpc", self.grpc,
                                  "--certs-dir", str(self.certs / "operator")], capture_output=True,
                                 text=True, timeout=5).stdout
        except subprocess.TimeoutExpired:
            return None
        found = re.search(r"^node \d+ \((\w+)\), term (\d+), leader ([\d-]+), last log ([\d-]+), "
                          r"committed ([\d-]+), applied ([\d-]+)", out, re.M)
        if not found:
            return None
        state, *numbers = found.groups()
        keys = ("term", "leader", "last_log", "committed", "applied")
        return {"state": state, **{k: None if v == "-" else int(v) for k, v in zip(keys, numbers)}}

    def leader(self):
        """The leader this node names in `warren status`, or None."""
        return (self.status() or {}).get("leader")

    def terminate(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def wait(self):
        """Waits for the node to exit after `terminate` (SIGKILL after 10 s); True if it exited
        cleanly."""
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()
        return self.proc.returncode in (0, -signal.SIGTERM)


def stop_nodes(nodes):
    """Stops every node (SIGTERM to all, then waits; SIGKILL after 10 s); returns those that did
    not exit cleanly."""
    for n in nodes:
        n.terminate()
    return [n for n in nodes if not n.wait()]


def make_certs(binary, directory, count):
    """The certificates of a cluster of `count` nodes on loopback, made with `warren cert` as an
    operator would: `ca/` (CA), `nodeN/` (each node's, for 127.0.0.1) and `operator/`."""
    def cert(*args):
        subprocess.run([str(binary), "cert", *args], check=True, capture_output=True, timeout=30)
    ca = directory / "ca"
    cert("create-ca", "--certs-dir", str(ca))
    signed = ["--ca-cert", str(ca / "ca.crt"), "--ca-key", str(ca / "ca.key")]
    for i in range(1, count + 1):
        cert("create-node", str(i), "--host", "127.0.0.1", "--host", "localhost",
             "--certs-dir", str(directory / f"node{i}"), *signed)
    cert("create-client", "operator", "--certs-dir", str(directory / "operator"), *signed)
    return directory


def start_nodes(binary, workdir, count, members=None):
    """`count` nodes listening on AMQP, STOMP and MQTT, formed into one cluster (with `--member`
    flags and a gRPC port each) when `count` > 1 or `members` is true. Retries with other ports
    (and a fresh directory) when a node exits before it listens."""
    members = count > 1 if members is None else members
    logs = ""
    for attempt in range(START_ATTEMPTS):
        ports = _free_ports(5 * count)
        amqp, grpc = ports[:count], (ports[count:2 * count] if members else [None] * count)
        management, stomp = ports[2 * count:3 * count], ports[3 * count:4 * count]
        mqtt = ports[4 * count:]
        flags = []
        if members:
            for i in range(count):
                flags += ["--member", f"{i + 1}@127.0.0.1:{amqp[i]}@127.0.0.1:{grpc[i]}"]
        attempt_dir = Path(workdir) / f"attempt{attempt}"
        attempt_dir.mkdir()
        certs = make_certs(binary, attempt_dir / "certs", count) if members else None
        nodes = []
        try:
            for i in range(count):
                nodes.append(Node(binary, attempt_dir, i + 1, amqp[i], grpc[i], flags, certs,
                                  management_port=management[i], stomp_port=stomp[i],
                                  mqtt_port=mqtt[i]))
            deadline = time.time() + START_TIMEOUT
            if all(n.listening(deadline) for n in nodes):
                return nodes
        except BaseException:
            stop_nodes(nodes)
            raise
        stop_nodes(nodes)
        logs = "\n-----\n".join(f"node {n.id}:\n{n.log()}" for n in nodes)
        shutil.rmtree(attempt_dir, ignore_errors=True)
    pytest.fail(f"warren exited before listening ({START_ATTEMPTS} attempts); last logs:\n{logs}",
                pytrace=False)


def _probe(url, deadline):
    """Opens a connection and declares (then deletes) a queue through it, retrying until the
    deadline: proof that the node serves clients (through the leader, in a cluster)."""
    params = pika.URLParameters(url + "?socket_timeout=5&stack_timeout=10&connection_attempts=1")
    while True:
        try:
            conn = pika.BlockingConnection(params)
            try:
                ch = conn.channel()
                ch.queue_declare("", exclusive=True)
            finally:
                conn.close()
            return
        except pika.exceptions.AMQPError as e:
            if time.time() > deadline:
                pytest.fail(f"{url} does not serve a queue.declare: {e!r}", pytrace=False)
            time.sleep(0.2)


def wait_until_serving(nodes):
    """In a cluster: every node names the same leader, then every node serves a declare."""
    deadline = time.time() + START_TIMEOUT
    if len(nodes) > 1:
        while True:
            leaders = [n.leader() for n in nodes]
            if leaders[0] is not None and len(set(leaders)) == 1:
                break
            if time.time() > deadline:
                logs = "\n-----\n".join(f"node {n.id}:\n{n.log()}" for n in nodes)
                pytest.fail(f"the nodes name no common leader within {START_TIMEOUT}s ({leaders}):\n{logs}",
                            pytrace=False)
            time.sleep(0.2)
    for n in nodes:
        _probe(n.url, deadline)


_node_reports = []


def _report(nodes, unclean, workdir):
    """After the session, for the terminal summary: the log of every node in `unclean` (did not
    stop cleanly); when `workdir` is kept (tests failed), the warnings and errors of every node."""
    for n in unclean:
        _node_reports.append(f"warren node {n.id} exited with {n.proc.returncode}; its log:\n{n.log()}")
    if workdir:
        for n in nodes:
            notable = [l for l in n.log().splitlines() if " WARN " in l or " ERROR " in l]
            _node_reports.append(f"warren node {n.id} ({n.url}): {len(notable)} warnings/errors, last 40:\n"
                                 + "\n".join(notable[-40:]))
        _node_reports.append(f"warren logs kept in {workdir}")


def pytest_terminal_summary(terminalreporter):
    if _node_reports:
        terminalreporter.section("warren nodes")
        for text in _node_reports:
            terminalreporter.write_line(text)


@pytest.fixture(scope="session")
def broker_urls(request):
    """The AMQP URL of every node of the broker under test (one for a single node; none for a
    broker without an AMQP side, WARREN_TEST_URL=none)."""
    external = os.environ.get("WARREN_TEST_URL")
    if external:
        _stomp_addresses[:] = [_host_port(a) for a in
                               re.split(r"[,\s]+", os.environ.get("WARREN_TEST_STOMP", "")) if a]
        _mqtt_addresses[:] = [_host_port(a) for a in
                              re.split(r"[,\s]+", os.environ.get("WARREN_TEST_MQTT", "")) if a]
        if external.strip().lower() == "none":
            yield []
            return
        yield [u for u in re.split(r"[,\s]+", external) if u]
        return
    count = int(os.environ.get("WARREN_TEST_NODES", "1"))
    assert count >= 1, "WARREN_TEST_NODES must be at least 1"
    binary = warren_binary()
    workdir = tempfile.mkdtemp(prefix="warren-py-")
    nodes = []
    try:
        nodes = start_nodes(binary, workdir, count)
        wait_until_serving(nodes)
        _management_urls[:] = [n.management for n in nodes]
        _stomp_addresses[:] = [(n.host, n.stomp_port) for n in nodes]
        _mqtt_addresses[:] = [(n.host, n.mqtt_port) for n in nodes]
        _started_nodes[:] = nodes
        yield [n.url for n in nodes]
    finally:
        unclean = stop_nodes(nodes)
        keep = request.session.testsfailed > 0 or unclean
        _report(nodes, unclean, workdir if keep else None)
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)


# The management API of each node the session started (empty against an external broker).
_management_urls = []
# The nodes the session started (empty against an external broker).
_started_nodes = []


@pytest.fixture
def settle(broker_urls):
    """settle() waits until every node has applied what the cluster had committed when it was
    called. A node routes a publish from its own replica, so a binding made through one node
    reaches a publisher on another once that node has applied it (within milliseconds; see
    docs/compatibility.md, "Routing on every node"): a test whose publisher learns of a
    binding outside the broker, as a test's code does, settles first. Nothing to wait for on
    one node or an external broker."""
    def wait(timeout=10):
        if len(_started_nodes) < 2:
            return
        statuses = [n.status() for n in _started_nodes]
        target = max((s["committed"] for s in statuses if s and s["committed"] is not None),
                     default=0)
        deadline = time.time() + timeout
        while time.time() < deadline:
            applied = [(n.status() or {}).get("applied") or 0 for n in _started_nodes]
            if all(a >= target for a in applied):
                return
            time.sleep(0.02)
        pytest.fail(f"the nodes did not apply the log up to {target} within {timeout}s")

    return wait


@pytest.fixture
def management_urls(broker_urls):
    """The management API URL of every node this session started, in `broker_urls`' order."""
    if not _management_urls:
        pytest.fail("the nodes under test were not started by this session: no management "
                    "API address is known (set WARREN_TEST_URL only for AMQP-only tests)",
                    pytrace=False)
    return list(_management_urls)


def broker_address(url):
    """(host, port) of an amqp:// URL, for programs configured by host and port."""
    parsed = urlparse(url)
    return parsed.hostname or "localhost", parsed.port or 5672


_tests_started = itertools.count()


@pytest.fixture
def _turn():
    """The round-robin position of a test's connections, AMQP, STOMP and MQTT alike: each test
    starts one node further than the test before."""
    return itertools.count(next(_tests_started))


@pytest.fixture
def node_url(broker_urls, _turn):
    """node_url(what) -> the URL of the next node, round-robin over the broker's nodes; each test
    starts one node further than the test before. Prints where `what` goes. Skips the test
    against a broker without an AMQP side (WARREN_TEST_URL=none)."""
    if not broker_urls:
        pytest.skip("the broker under test has no AMQP side (WARREN_TEST_URL=none)")

    def next_url(what="connection"):
        i = next(_turn) % len(broker_urls)
        if len(broker_urls) > 1:
            print(f"{what} -> node {i + 1} ({broker_urls[i]})")
        return broker_urls[i]

    return next_url


# The STOMP address (host, port) of each node: those the session started, or WARREN_TEST_STOMP's.
_stomp_addresses = []


def _host_port(address):
    """(host, port) of `host:port` (`[v6]:port` too)."""
    host, _, port = address.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def _next_listener(protocol, addresses, turn):
    """next(what) -> (host, port) of the next node's `protocol` listener (from `addresses`),
    round-robin over the nodes in turn with `connect()` and `node_url()`; prints where `what`
    goes. Against a broker already running (WARREN_TEST_URL), skips the test unless
    WARREN_TEST_<PROTOCOL> names its listeners."""
    if not addresses:
        if os.environ.get("WARREN_TEST_URL"):
            pytest.skip(f"WARREN_TEST_{protocol} (host:port of each node's {protocol} listener, "
                        "comma-separated) is not set for the broker of WARREN_TEST_URL")
        pytest.fail(f"the nodes this session started have no {protocol} port", pytrace=False)
    addresses = list(addresses)

    def next_address(what=f"{protocol} connection"):
        i = next(turn) % len(addresses)
        if len(addresses) > 1:
            print(f"{what} -> node {i + 1} ({protocol} {addresses[i][0]}:{addresses[i][1]})")
        return addresses[i]

    return next_address


@pytest.fixture
def stomp_address(broker_urls, _turn):
    """stomp_address(what) -> (host, port) of the next node's STOMP listener (see
    `_next_listener`)."""
    return _next_listener("STOMP", _stomp_addresses, _turn)


# The MQTT address (host, port) of each node: those the session started, or WARREN_TEST_MQTT's.
_mqtt_addresses = []


@pytest.fixture
def mqtt_address(broker_urls, _turn):
    """mqtt_address(what) -> (host, port) of the next node's MQTT listener (see
    `_next_listener`)."""
    return _next_listener("MQTT", _mqtt_addresses, _turn)


@pytest.fixture
def name():
    """A unique name, so tests never collide on a shared broker."""
    return "t-" + uuid.uuid4().hex[:10]


@pytest.fixture
def connect(node_url):
    """connect() opens a pika BlockingConnection to the next node (see `node_url`); those still
    open after the test are closed."""
    opened = []

    def open_():
        conn = pika.BlockingConnection(pika.URLParameters(node_url(f"connection {len(opened) + 1}")))
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
def program(node_url):
    """program("pika_blog/notify.py", python=None, args=(), env={}) starts a seed program with
    WARREN_HOST/WARREN_PORT pointing at the next node (see `node_url`); every one still running is
    stopped after the test."""
    started = []

    def start(path, python=None, args=(), env=None):
        host, port = broker_address(node_url(f"{path} {' '.join(args)}".strip()))
        broker = {"WARREN_HOST": host, "WARREN_PORT": str(port)}
        full_env = dict(os.environ, PYTHONUNBUFFERED="1", **broker, **(env or {}))
        p = Program(SEEDS / path, python or sys.executable, full_env, args)
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()

