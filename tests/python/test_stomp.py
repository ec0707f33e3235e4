"""STOMP 1.0/1.1/1.2 as RabbitMQ's STOMP plugin (3.10) serves it, through stomp.py and, for what
stomp.py never sends, a bare socket: connecting, destinations (/queue, /topic, /exchange,
/amq/queue, /temp-queue), the mapping of headers to AMQP properties both ways (checked with
pika), acks, receipts, transactions, durable subscriptions, queue arguments, bad input and
heart-beats. The STOMP clients of a test are spread over the nodes like its AMQP connections.
"""
import base64
import decimal
import hashlib
import re
import socket
import threading
import time

import pika
import pytest
import stomp

from helpers import get_one, wait_until

TIMEOUT = 5
SERVER = re.compile(r"[\w.-]+/\d+\.\d+\.\d+\S*")  # e.g. RabbitMQ/3.10.8
SESSION = re.compile(r"session-[\w-]{22}")


# --- stomp.py clients --------------------------------------------------------------------------

class Frames(stomp.ConnectionListener):
    """What one stomp.py connection received, in order, for a test to wait on."""

    def __init__(self):
        self.cond = threading.Condition()
        self.connected, self.messages, self.errors, self.receipts = [], [], [], []
        self.heartbeats = 0
        self.disconnected = False

    def _add(self, frames, frame):
        with self.cond:
            frames.append(frame)
            self.cond.notify_all()

    def on_connected(self, frame):
        self._add(self.connected, frame)

    def on_message(self, frame):
        self._add(self.messages, frame)

    def on_error(self, frame):
        self._add(self.errors, frame)

    def on_receipt(self, frame):
        self._add(self.receipts, frame)

    def on_heartbeat(self):
        with self.cond:
            self.heartbeats += 1
            self.cond.notify_all()

    def on_disconnected(self):
        with self.cond:
            self.disconnected = True
            self.cond.notify_all()

    def until(self, predicate, what, timeout=TIMEOUT):
        with self.cond:
            if not self.cond.wait_for(predicate, timeout):
                raise AssertionError(f"no {what} within {timeout}s; messages "
                                     f"{[m.body for m in self.messages]}, errors "
                                     f"{[(e.headers, e.body) for e in self.errors]}")

    def wait_messages(self, count, timeout=TIMEOUT):
        """The first `count` MESSAGE frames, once they came."""
        self.until(lambda: len(self.messages) >= count, f"{count} message(s)", timeout)
        return self.messages[:count]

    def wait_error(self, timeout=TIMEOUT):
        self.until(lambda: self.errors, "ERROR frame", timeout)
        return self.errors[0]

    def wait_receipt(self, receipt_id, timeout=TIMEOUT):
        self.until(lambda: any(r.headers.get("receipt-id") == receipt_id for r in self.receipts),
                   f"RECEIPT {receipt_id!r}", timeout)

    def wait_disconnected(self, timeout=TIMEOUT):
        self.until(lambda: self.disconnected, "disconnection", timeout)

    def quiet(self, count, seconds=0.5):
        """Checks that no MESSAGE beyond the first `count` comes within `seconds`."""
        time.sleep(seconds)
        with self.cond:
            assert len(self.messages) == count, \
                f"unexpected messages {[m.body for m in self.messages[count:]]}"


def bodies(frames):
    return [f.body for f in frames]


@pytest.fixture
def stomp_client(stomp_address):
    """stomp_client(version="1.2", ...) -> a stomp.py connection to the next node, CONNECTED (its
    listener as `.frames`); with `expect_error=True` it returns once an ERROR came instead.
    Those still connected after the test disconnect."""
    opened = []

    def open_(version="1.2", login="guest", passcode="guest", vhost="/", heartbeats=(0, 0),
              expect_error=False, what=None, **connect_args):
        address = stomp_address(what or f"STOMP {version} client {len(opened) + 1}")
        common = dict(host_and_ports=[address], reconnect_attempts_max=1, timeout=TIMEOUT)
        if version == "1.0":
            conn = stomp.Connection10(**common)
        else:
            cls = {"1.1": stomp.Connection11, "1.2": stomp.Connection12}[version]
            conn = cls(heartbeats=heartbeats, vhost=vhost, **common)
        conn.frames = Frames()
        conn.set_listener("frames", conn.frames)
        opened.append(conn)
        conn.connect(login, passcode, wait=False, **connect_args)
        if expect_error:
            conn.frames.wait_error()
        else:
            conn.frames.until(lambda: conn.frames.connected or conn.frames.errors, "CONNECTED")
            assert not conn.frames.errors, [(e.headers, e.body) for e in conn.frames.errors]
        return conn

    yield open_
    for conn in opened:
        try:
            if conn.is_connected():
                conn.disconnect()
                conn.frames.wait_disconnected(2)
            else:  # refused, or ended by the server: the socket may still be open
                conn.transport.disconnect_socket()
        except Exception:
            pass


def disconnect(conn):
    """DISCONNECT with a receipt, then waits until the server closed the connection."""
    conn.disconnect(receipt="bye")
    conn.frames.wait_disconnected()


def subscribe(conn, destination, sub_id, ack="auto", **headers):
    """SUBSCRIBE with a receipt, and waits for it: the subscription exists when this returns."""
    receipt = f"sub-{sub_id}"
    if isinstance(conn, stomp.StompConnection10):
        conn.subscribe(destination, id=sub_id, ack=ack, headers=dict(headers, receipt=receipt))
    else:
        conn.subscribe(destination, sub_id, ack=ack, headers=dict(headers, receipt=receipt))
    conn.frames.wait_receipt(receipt)


def send(conn, destination, body, **headers):
    """SEND with a receipt, and waits for it: RabbitMQ answers once the message is routed."""
    receipt = f"send-{time.monotonic_ns()}"
    conn.send(destination, body, headers=dict(headers, receipt=receipt))
    conn.frames.wait_receipt(receipt)


# --- STOMP on a bare socket --------------------------------------------------------------------

class Frame:
    def __init__(self, command, headers, body):
        self.command, self.headers, self.body = command, headers, body

    def __getitem__(self, name):
        return next(v for k, v in self.headers if k == name)

    def get(self, name, default=None):
        return next((v for k, v in self.headers if k == name), default)

    @property
    def names(self):
        return [k for k, _ in self.headers]

    def __repr__(self):
        return f"Frame({self.command!r}, {self.headers!r}, {self.body[:200]!r})"


def encode(command, headers=(), body=b""):
    return (command.encode() + b"\n" + b"".join(f"{k}:{v}\n".encode() for k, v in headers)
            + b"\n" + body + b"\0")


class Raw:
    """A STOMP client on a bare socket: frames go out exactly as given (no escaping), and come
    back as `Frame`s; end-of-lines between frames are counted as heart-beats, except the one
    that directly follows a frame's NUL."""

    def __init__(self, address):
        self.sock = socket.create_connection(address, timeout=TIMEOUT)
        self.buf = b""
        self.beats = 0
        self.eof = False

    def send(self, command, headers=(), body=b""):
        self.sock.sendall(encode(command, headers, body))

    def sendall(self, data):
        self.sock.sendall(data)

    def connect(self, version="1.2", login="guest", passcode="guest", host="/", extra=()):
        """CONNECT, and the CONNECTED frame that answers it."""
        self.send("CONNECT", [("accept-version", version), ("host", host), ("login", login),
                              ("passcode", passcode), *extra])
        frame = self.frame()
        assert frame.command == "CONNECTED", frame
        return frame

    def _fill(self, deadline):
        """Reads more bytes until the deadline; False if none came (or the connection ended)."""
        remaining = deadline - time.monotonic()
        if remaining <= 0 or self.eof:
            return False
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(1 << 16)
        except socket.timeout:
            return False
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def _skip_eols(self, count):
        while True:
            for eol in (b"\r\n", b"\n"):
                if self.buf.startswith(eol):
                    self.buf = self.buf[len(eol):]
                    self.beats += count
                    break
            else:
                return

    def _parse(self):
        self._skip_eols(1)
        end = self.buf.find(b"\n\n")
        if end < 0:
            return None
        lines = self.buf[:end].decode().split("\n")
        headers = [tuple(line.split(":", 1)) for line in lines[1:]]
        start = end + 2
        length = next((int(v) for k, v in headers if k == "content-length"), None)
        if length is not None:
            stop = start + length
            if len(self.buf) <= stop:
                return None
            assert self.buf[stop:stop + 1] == b"\0", self.buf[:stop + 1]
        else:
            stop = self.buf.find(b"\0", start)
            if stop < 0:
                return None
        frame = Frame(lines[0], headers, self.buf[start:stop])
        self.buf = self.buf[stop + 1:]
        if self.buf.startswith(b"\n"):  # the optional EOL after a frame, not a heart-beat
            self.buf = self.buf[1:]
        return frame

    def frame(self, timeout=TIMEOUT):
        """The next frame; fails if none comes within `timeout` or the connection ends."""
        deadline = time.monotonic() + timeout
        while True:
            frame = self._parse()
            if frame is not None:
                return frame
            if not self._fill(deadline):
                state = "closed" if self.eof else "still open"
                raise AssertionError(f"no frame within {timeout}s (connection {state}); "
                                     f"pending bytes {self.buf[:300]!r}")

    def frames_until_closed(self, timeout=TIMEOUT):
        """The frames that come before the server closes the connection; fails if it does not
        close within `timeout`."""
        deadline, frames = time.monotonic() + timeout, []
        while True:
            frame = self._parse()
            if frame is not None:
                frames.append(frame)
                continue
            if not self._fill(deadline):
                assert self.eof, f"still open after {timeout}s; frames {frames}, " \
                                 f"pending {self.buf[:300]!r}"
                return frames

    def nothing(self, seconds=0.5):
        """Checks that no frame comes within `seconds` (and the connection stays open)."""
        deadline = time.monotonic() + seconds
        while self._fill(deadline):
            pass
        frame = self._parse()
        assert frame is None and not self.eof, (frame, self.eof)

    def close(self):
        self.sock.close()


@pytest.fixture
def raw(stomp_address):
    """raw() -> a `Raw` socket to the next node's STOMP port; all closed after the test."""
    opened = []

    def open_():
        opened.append(Raw(stomp_address(f"raw STOMP socket {len(opened) + 1}")))
        return opened[-1]

    yield open_
    for r in opened:
        r.close()


def error_text(frame):
    """(message header, body) of an ERROR frame, from stomp.py or `Raw`."""
    assert (getattr(frame, "cmd", None) or frame.command) == "ERROR", frame
    body = frame.body.decode() if isinstance(frame.body, bytes) else frame.body
    return frame.headers["message"] if isinstance(frame.headers, dict) else frame["message"], body


# --- AMQP side ---------------------------------------------------------------------------------

@pytest.fixture
def doomed(broker_urls):
    """doomed(queue=..., exchange=...) records names to delete after the test (through a
    connection of its own, also when the test failed)."""
    queues, exchanges = [], []

    def add(queue=None, exchange=None):
        if queue:
            queues.append(queue)
        if exchange:
            exchanges.append(exchange)

    yield add
    conn = pika.BlockingConnection(pika.URLParameters(broker_urls[0]))
    try:
        for q in queues:
            conn.channel().queue_delete(q)
        for x in exchanges:
            conn.channel().exchange_delete(x)
    finally:
        conn.close()


def channel_error(conn, f):
    """(reply code, reply text) of the channel error `f(channel)` causes on a new channel."""
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        f(conn.channel())
    return e.value.reply_code, e.value.reply_text


def queue_exists(conn, queue):
    ch = conn.channel()
    try:
        ch.queue_declare(queue, passive=True)
    except pika.exceptions.ChannelClosedByBroker as e:
        assert e.reply_code == 404, e
        return False
    ch.close()
    return True


def message_count(conn, queue):
    ch = conn.channel()
    count = ch.queue_declare(queue, passive=True).method.message_count
    ch.close()
    return count


def subscription_queue(destination, sub_id):
    """The queue RabbitMQ names for a durable subscription `sub_id` to /topic/`destination` (or
    to /exchange/X/`destination`): "stomp-subscription-" and the URL-safe base64 (no padding) of
    the MD5 of Erlang's term_to_binary({Destination, Id}), both strings of bytes."""
    def etf_string(s):
        b = s.encode()
        return b"\x6a" if not b else b"\x6b" + len(b).to_bytes(2, "big") + b
    term = b"\x83\x68\x02" + etf_string(destination) + etf_string(sub_id)
    digest = base64.urlsafe_b64encode(hashlib.md5(term).digest()).decode().rstrip("=")
    return f"stomp-subscription-{digest}"


# --- 1. CONNECT --------------------------------------------------------------------------------

@pytest.mark.parametrize("version", ["1.0", "1.1", "1.2"])
def test_connect_negotiates_each_version(stomp_client, version):
    # 1.1 with the CONNECT command, 1.2 with STOMP (stomp.py's default from 1.1 on).
    extra = {"with_connect_command": True} if version == "1.1" else {}
    conn = stomp_client(version, **extra)
    headers = conn.frames.connected[0].headers
    assert headers["version"] == version
    assert SERVER.fullmatch(headers["server"]), headers
    assert SESSION.fullmatch(headers["session"]), headers
    assert headers["heart-beat"] == "0,0"
    disconnect(conn)


def test_connected_frame_exactly(raw):
    r = raw()
    frame = r.connect("1.0,1.1,1.2")
    assert frame.names == ["server", "session", "heart-beat", "version"]
    assert frame["version"] == "1.2" and frame["heart-beat"] == "0,0" and frame.body == b""
    r = raw()
    r.send("CONNECT", [("login", "guest"), ("passcode", "guest")])  # no accept-version: 1.0
    assert r.frame()["version"] == "1.0"
    r = raw()
    r.send("STOMP", [("accept-version", "1.1"), ("host", "/"), ("login", "guest"),
                     ("passcode", "guest")])
    assert r.frame()["version"] == "1.1"
    r = raw()
    r.send("CONNECT", [("accept-version", "2.0"), ("host", "/"), ("login", "guest"),
                       ("passcode", "guest")])
    error = r.frame()
    assert error.names == ["message", "content-type", "version", "content-length"]
    assert (error["message"], error["content-type"], error["version"]) == \
        ("Version mismatch", "text/plain", "1.0,1.1,1.2")
    assert error.body == b"Supported versions are 1.0,1.1,1.2\n"


def _refused_then_unusable(r):
    """After a refused CONNECT nobody is logged in: RabbitMQ keeps the connection open (until its
    login timeout, 10 s) and answers any further frame with an ERROR; closing it at once (as the
    STOMP spec has it) is the other acceptable answer. Never a RECEIPT."""
    try:
        r.send("SUBSCRIBE", [("destination", "/queue/never"), ("id", "1"), ("receipt", "r")])
    except OSError:
        return  # already closed
    try:
        frame = r.frame(2)
    except AssertionError:
        assert r.eof, "after a refused CONNECT, neither an ERROR nor a close"
        return
    assert error_text(frame) == ("Illegal command", "You must log in using CONNECT first")


def test_connect_refused(stomp_client, raw, name):
    conn = stomp_client("1.2", passcode="wrong", expect_error=True)
    assert not conn.frames.connected
    assert error_text(conn.frames.errors[0]) == ("Bad CONNECT", "Access refused for user 'guest'\n")

    r = raw()
    r.send("CONNECT", [("accept-version", "1.2"), ("host", "/"), ("login", "guest"),
                       ("passcode", "wrong")])
    error = r.frame()
    assert error.names == ["message", "content-type", "version", "content-length"]
    assert error_text(error) == ("Bad CONNECT", "Access refused for user 'guest'\n")
    _refused_then_unusable(r)

    r = raw()
    r.send("CONNECT", [("accept-version", "1.2"), ("host", "/"), ("login", f"{name}-nobody"),
                       ("passcode", "guest")])
    assert error_text(r.frame()) == ("Bad CONNECT", f"Access refused for user '{name}-nobody'\n")

    conn = stomp_client("1.1", vhost=f"{name}-vhost", expect_error=True)
    assert error_text(conn.frames.errors[0]) == \
        ("Bad CONNECT", f"Virtual host '{name}-vhost' access denied")  # no end of line
    r = raw()
    r.send("CONNECT", [("accept-version", "1.2"), ("host", f"{name}-vhost"), ("login", "guest"),
                       ("passcode", "guest")])
    assert error_text(r.frame()) == ("Bad CONNECT", f"Virtual host '{name}-vhost' access denied")
    _refused_then_unusable(r)


# --- 2. /queue ---------------------------------------------------------------------------------

def test_send_then_subscribe_on_a_queue(stomp_client, connect, doomed, name):
    doomed(queue=name)
    publisher = stomp_client()
    send(publisher, f"/queue/{name}", "hello", **{"content-type": "text/plain", "x-foo": "bar"})
    consumer = stomp_client()
    session = consumer.frames.connected[0].headers["session"]
    subscribe(consumer, f"/queue/{name}", "s1")
    (message,) = consumer.frames.wait_messages(1)
    assert message.body == "hello"
    h = message.headers
    assert h["destination"] == f"/queue/{name}"
    assert h["subscription"] == "s1"
    assert h["message-id"] == f"T_s1@@{session}@@1"
    assert h["redelivered"] == "false"
    assert "ack" not in h  # auto ack
    assert h["content-type"] == "text/plain" and h["x-foo"] == "bar"
    assert h["content-length"] == "5"
    disconnect(consumer)
    disconnect(publisher)
    # The queue the SEND declared: durable, not auto-delete, empty now.
    conn = connect()
    assert message_count(conn, name) == 0
    conn.channel().queue_declare(name, durable=True)  # equivalent: no error
    assert channel_error(conn, lambda c: c.queue_declare(name, durable=False)) == (
        406, f"PRECONDITION_FAILED - inequivalent arg 'durable' for queue '{name}' in vhost '/': "
             "received 'false' but current is 'true'")


def test_send_creates_a_durable_queue_amqp_sees(stomp_client, connect, doomed, name):
    doomed(queue=name)
    conn = connect()
    assert not queue_exists(conn, name)
    publisher = stomp_client()
    send(publisher, f"/queue/{name}", "for amqp")
    disconnect(publisher)
    ch = conn.channel()
    ok = ch.queue_declare(name, durable=True, passive=True)
    assert ok.method.message_count == 1
    method, props, body = get_one(ch, name, auto_ack=True)
    assert body == b"for amqp"
    assert (method.exchange, method.routing_key) == ("", name)
    assert props.delivery_mode is None and props.content_type is None  # transient, untyped


# --- 3. /topic ---------------------------------------------------------------------------------

def test_topic_pub_sub_and_wildcards(stomp_client, connect, name, settle):
    key = f"{name}.k"
    first, second, wildcard = stomp_client(), stomp_client(), stomp_client()
    subscribe(first, f"/topic/{key}", "a")
    subscribe(second, f"/topic/{key}", "b")
    subscribe(wildcard, f"/topic/{name}.*", "w")
    settle()  # the bindings on every node (publishers below are on others)
    publisher = stomp_client()
    send(publisher, f"/topic/{key}", "from stomp")
    connect().channel().basic_publish("amq.topic", key, b"from amqp")
    for sub, conn in (("a", first), ("b", second), ("w", wildcard)):
        messages = conn.frames.wait_messages(2)
        assert bodies(messages) == ["from stomp", "from amqp"]
        for m in messages:
            assert m.headers["destination"] == f"/topic/{key}"
            assert m.headers["subscription"] == sub
    send(publisher, f"/topic/{name}.other", "other")
    send(publisher, f"/topic/{name}.a.b", "two words")  # * matches one word only
    assert bodies(wildcard.frames.wait_messages(3)) == ["from stomp", "from amqp", "other"]
    assert wildcard.frames.messages[2].headers["destination"] == f"/topic/{name}.other"
    wildcard.frames.quiet(3, 0.3)
    first.frames.quiet(2, 0)
    # A "/" in a routing key is %2F in destinations.
    ch = connect().channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, "amq.topic", f"{name}/x")
    settle()
    send(publisher, f"/topic/{name}%2Fx", "slash")
    method, _, body = get_one(ch, q)
    assert (method.routing_key, body) == (f"{name}/x", b"slash")


# --- 4. /exchange ------------------------------------------------------------------------------

def test_exchange_destinations(stomp_client, connect, doomed, name, settle):
    fanout, topic = f"{name}-fanout", f"{name}-topic"
    doomed(exchange=fanout)
    doomed(exchange=topic)
    conn = connect()
    ch = conn.channel()
    ch.exchange_declare(fanout, "fanout")
    ch.exchange_declare(topic, "topic")
    consumer = stomp_client()
    subscribe(consumer, f"/exchange/{fanout}", "f")
    subscribe(consumer, f"/exchange/{topic}/a.*", "t")
    settle()
    ch.basic_publish(fanout, "", b"fan, no key")
    ch.basic_publish(fanout, "rk", b"fan, key")
    ch.basic_publish(topic, "b.c", b"not for a.*")
    ch.basic_publish(topic, "a.b", b"topic")
    messages = consumer.frames.wait_messages(3)
    assert [(m.body, m.headers["subscription"], m.headers["destination"]) for m in messages] == [
        ("fan, no key", "f", f"/exchange/{fanout}"),
        ("fan, key", "f", f"/exchange/{fanout}/rk"),
        ("topic", "t", f"/exchange/{topic}/a.b"),
    ]
    consumer.frames.quiet(3, 0.3)
    # SEND to /exchange/NAME/KEY reaches an AMQP queue bound with KEY.
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, topic, "a.q")
    settle()
    publisher = stomp_client()
    send(publisher, f"/exchange/{topic}/a.q", "to amqp")
    method, _, body = get_one(ch, q)
    assert (method.exchange, method.routing_key, body) == (topic, "a.q", b"to amqp")
    # ...and the STOMP subscriber to a.* got it too.
    assert consumer.frames.wait_messages(4)[3].body == "to amqp"
    # An exchange that does not exist: ERROR, and the connection ends.
    publisher.send(f"/exchange/{name}-none/k", "lost")
    assert error_text(publisher.frames.wait_error()) == (
        "not_found", f"NOT_FOUND - no exchange '{name}-none' in vhost '/'")
    publisher.frames.wait_disconnected()


# --- 5. /amq/queue -----------------------------------------------------------------------------

def test_amq_queue_destination(stomp_client, raw, connect, doomed, name):
    doomed(queue=name)
    conn = connect()
    ch = conn.channel()
    ch.queue_declare(name, durable=False)  # /amq/queue never declares: no durable mismatch
    consumer = stomp_client()
    subscribe(consumer, f"/amq/queue/{name}", "q")
    ch.confirm_delivery()  # in the queue before the STOMP client sends (messages of two
    ch.basic_publish("", name, b"from amqp")  # connections have no order otherwise)
    send(consumer, f"/amq/queue/{name}", "from stomp")
    messages = consumer.frames.wait_messages(2)
    assert bodies(messages) == ["from amqp", "from stomp"]
    assert {m.headers["destination"] for m in messages} == {f"/queue/{name}"}
    # /queue/NAME declares the queue durable: a non-durable one is a precondition failure.
    r = raw()
    r.connect()
    r.send("SUBSCRIBE", [("destination", f"/queue/{name}"), ("id", "x")])
    (error,) = r.frames_until_closed()
    assert error_text(error) == (
        "precondition_failed", f"PRECONDITION_FAILED - inequivalent arg 'durable' for queue "
                               f"'{name}' in vhost '/': received 'true' but current is 'false'")
    # A queue that does not exist: ERROR, then the server closes the connection.
    r = raw()
    r.connect()
    r.send("SUBSCRIBE", [("destination", f"/amq/queue/{name}-none"), ("id", "x")])
    (error,) = r.frames_until_closed()
    assert error.names == ["message", "content-type", "version", "content-length"]
    assert error_text(error) == ("not_found", f"NOT_FOUND - no queue '{name}-none' in vhost '/'")
    assert not queue_exists(conn, f"{name}-none")


# --- 6. Headers and AMQP properties ------------------------------------------------------------

def test_stomp_headers_become_amqp_properties(stomp_client, raw, connect, doomed, name):
    doomed(queue=name)
    publisher = stomp_client()
    publisher.send(f"/queue/{name}", "{}", headers={
        "content-type": "application/json", "content-encoding": "utf-8", "persistent": "true",
        "priority": "3", "correlation-id": "corr-1", "reply-to": "/queue/replies",
        "expiration": "60000", "amqp-message-id": "m-1", "timestamp": "1700000000",
        "type": "t", "user-id": "guest", "app-id": "app", "x-foo": "bar", "receipt": "props"})
    publisher.frames.wait_receipt("props")
    conn = connect()
    _, props, body = get_one(conn.channel(), name, auto_ack=True)
    assert body == b"{}"
    assert (props.content_type, props.content_encoding, props.delivery_mode, props.priority) == \
        ("application/json", "utf-8", 2, 3)
    assert (props.correlation_id, props.reply_to, props.expiration, props.message_id) == \
        ("corr-1", "/queue/replies", "60000", "m-1")
    assert (props.timestamp, props.type, props.user_id, props.app_id) == \
        (1700000000, "t", "guest", "app")
    # Every other header goes to the headers table as a string, content-length and receipt too
    # (stomp.py adds content-length).
    assert props.headers == {"x-foo": "bar", "content-length": "2", "receipt": "props"}
    # No persistent header leaves delivery_mode unset; no other header: an empty table.
    raw_client = raw()
    raw_client.connect()
    raw_client.send("SEND", [("destination", f"/queue/{name}")], b"x")
    _, props, _ = get_one(conn.channel(), name, auto_ack=True)
    assert props.delivery_mode is None and props.priority is None and props.headers == {}


def test_send_persistent_false_declares_an_exclusive_queue(raw, connect, doomed, name):
    """On a SEND (or SUBSCRIBE) to /queue/NAME, RabbitMQ also reads persistent (durable),
    durable, auto-delete and exclusive as how to declare the queue, the first time the
    connection uses it: persistent:false declares it transient, exclusive and auto-delete."""
    doomed(queue=name)
    conn = connect()
    r = raw()
    r.connect()
    r.send("SEND", [("destination", f"/queue/{name}-mine"), ("persistent", "false"),
                    ("receipt", "sent")], b"x")
    assert r.frame().headers == [("receipt-id", "sent")]
    code, text = channel_error(conn, lambda c: c.queue_declare(f"{name}-mine", passive=True))
    assert code == 405 and text.startswith("RESOURCE_LOCKED - cannot obtain exclusive access")
    r.close()
    wait_until(lambda: not queue_exists(conn, f"{name}-mine"), what="the exclusive queue to go")
    # The same to a durable queue that exists: refused, and the connection ends.
    conn.channel().queue_declare(name, durable=True)
    r = raw()
    r.connect()
    r.send("SEND", [("destination", f"/queue/{name}"), ("persistent", "false")], b"x")
    (error,) = r.frames_until_closed()
    assert error_text(error) == (
        "resource_locked", f"RESOURCE_LOCKED - cannot obtain exclusive access to locked queue "
        f"'{name}' in vhost '/'. It could be originally declared on another connection or the "
        "exclusive property value does not match that of the original declaration.")
    assert message_count(conn, name) == 0


def test_amqp_properties_become_message_headers(raw, stomp_client, connect, doomed, name):
    doomed(queue=name)
    conn = connect()
    ch = conn.channel()
    ch.queue_declare(name, durable=True)
    props = pika.BasicProperties(
        content_type="text/plain", content_encoding="utf-8", delivery_mode=2, priority=5,
        correlation_id="corr-1", reply_to="replies", expiration="60000", message_id="m-1",
        timestamp=1700000000, type="t", user_id="guest", app_id="app",
        headers={"s": "str", "i": 42, "big": 2 ** 40, "b": True, "d": decimal.Decimal("1.5"),
                 "l": [1], "t": {"k": "v"}, "n": None})
    ch.basic_publish("", name, b"hello", props)
    ch.basic_publish("", name, b"plain", pika.BasicProperties(reply_to="/queue/elsewhere",
                                                              delivery_mode=1))
    r = raw()
    session = r.connect()["session"]
    r.send("SUBSCRIBE", [("destination", f"/queue/{name}"), ("id", "s"), ("ack", "client")])
    message = r.frame()
    tag = f"T_s@@{session}@@1"
    # Exactly these, in this order: the table's strings and integers only (booleans, decimals,
    # arrays, tables and voids left out), then the properties, last first.
    assert message.command == "MESSAGE"
    assert message.headers == [
        ("subscription", "s"), ("destination", f"/queue/{name}"), ("message-id", tag),
        ("redelivered", "false"), ("ack", tag),
        ("s", "str"), ("i", "42"), ("big", str(2 ** 40)),
        ("app-id", "app"), ("user-id", "guest"), ("type", "t"), ("timestamp", "1700000000"),
        ("amqp-message-id", "m-1"), ("expiration", "60000"), ("reply-to", "/reply-queue/replies"),
        ("correlation-id", "corr-1"), ("priority", "5"), ("persistent", "true"),
        ("content-encoding", "utf-8"), ("content-type", "text/plain"), ("content-length", "5"),
    ]
    assert message.body == b"hello"
    message = r.frame()
    assert message.headers[5:] == [("reply-to", "/queue/elsewhere"), ("persistent", "1"),
                                   ("content-length", "5")]
    r.close()
    # The same through stomp.py 1.1 (client-individual: no ack header before 1.2); both messages
    # come back redelivered since the raw subscriber never acked them.
    consumer = stomp_client("1.1")
    subscribe(consumer, f"/queue/{name}", "s11", ack="client-individual")
    first, second = consumer.frames.wait_messages(2)
    assert "ack" not in first.headers
    assert first.headers["redelivered"] == "true"
    assert first.headers["reply-to"] == "/reply-queue/replies"
    assert first.headers["persistent"] == "true" and first.headers["priority"] == "5"
    assert (first.headers["s"], first.headers["i"]) == ("str", "42")
    assert not {"b", "d", "l", "t", "n"} & first.headers.keys()
    for m in (first, second):
        consumer.ack(m.headers["message-id"], "s11")


# --- 7. Acknowledgements -----------------------------------------------------------------------

def test_client_individual_ack_then_redelivery(stomp_client, connect, doomed, name):
    doomed(queue=name)
    conn = stomp_client()
    send(conn, f"/queue/{name}", "m0")
    send(conn, f"/queue/{name}", "m1")
    subscribe(conn, f"/queue/{name}", "ci", ack="client-individual")
    m0, m1 = conn.frames.wait_messages(2)
    assert bodies([m0, m1]) == ["m0", "m1"]
    assert m1.headers["ack"] == m1.headers["message-id"]
    conn.ack(m1.headers["ack"], receipt="acked")
    conn.frames.wait_receipt("acked")
    disconnect(conn)
    # m0 was never acked: the next subscriber gets it, redelivered; m1 is gone.
    other = stomp_client()
    subscribe(other, f"/queue/{name}", "again")
    (again,) = other.frames.wait_messages(1)
    assert (again.body, again.headers["redelivered"]) == ("m0", "true")
    other.frames.quiet(1, 0.3)
    assert message_count(connect(), name) == 0


def test_client_ack_is_cumulative(stomp_client, connect, doomed, name):
    doomed(queue=name)
    conn = stomp_client("1.1")
    for i in range(3):
        send(conn, f"/queue/{name}", f"m{i}")
    subscribe(conn, f"/queue/{name}", "c", ack="client")
    messages = conn.frames.wait_messages(3)
    assert bodies(messages) == ["m0", "m1", "m2"]
    conn.ack(messages[1].headers["message-id"], "c", receipt="acked")  # m0 and m1
    conn.frames.wait_receipt("acked")
    disconnect(conn)
    other = stomp_client()
    subscribe(other, f"/queue/{name}", "again")
    (again,) = other.frames.wait_messages(1)
    assert (again.body, again.headers["redelivered"]) == ("m2", "true")
    other.frames.quiet(1, 0.3)


def test_nack(stomp_client, connect, doomed, name):
    doomed(queue=name)
    conn = stomp_client()
    send(conn, f"/queue/{name}", "once more")
    subscribe(conn, f"/queue/{name}", "n", ack="client-individual")
    (first,) = conn.frames.wait_messages(1)
    conn.nack(first.headers["ack"])  # requeue by default
    _, second = conn.frames.wait_messages(2)
    assert (second.body, second.headers["redelivered"]) == ("once more", "true")
    assert second.headers["ack"] != first.headers["ack"]
    conn.nack(second.headers["ack"], requeue="false", receipt="dropped")
    conn.frames.wait_receipt("dropped")
    conn.frames.quiet(2, 0.3)
    assert message_count(connect(), name) == 0


def test_prefetch_count_one(stomp_client, doomed, name):
    doomed(queue=name)
    conn = stomp_client()
    for i in range(3):
        send(conn, f"/queue/{name}", f"m{i}")
    subscribe(conn, f"/queue/{name}", "p", ack="client", **{"prefetch-count": "1"})
    for i in range(3):
        message = conn.frames.wait_messages(i + 1)[i]
        assert message.body == f"m{i}"
        conn.frames.quiet(i + 1, 0.4)  # nothing more until the ACK
        conn.ack(message.headers["ack"])
    conn.frames.quiet(3, 0.2)


# --- 8. Receipts -------------------------------------------------------------------------------

def test_receipts(raw, connect, doomed, name):
    doomed(queue=name)
    conn = connect()
    r = raw()
    r.connect()
    # SEND: the RECEIPT comes once the message is in the queue.
    r.send("SEND", [("destination", f"/queue/{name}"), ("receipt", "sent-1")], b"one")
    receipt = r.frame()
    assert (receipt.command, receipt.headers, receipt.body) == \
        ("RECEIPT", [("receipt-id", "sent-1")], b"")
    method, _, body = conn.channel().basic_get(name, auto_ack=True)
    assert body == b"one"
    # SUBSCRIBE: the RECEIPT comes before the messages already waiting.
    r.send("SEND", [("destination", f"/queue/{name}")], b"two")
    r.send("SUBSCRIBE", [("destination", f"/queue/{name}"), ("id", "s"), ("receipt", "sub-1")])
    assert r.frame().headers == [("receipt-id", "sub-1")]
    message = r.frame()
    assert (message.command, message.body) == ("MESSAGE", b"two")
    # UNSUBSCRIBE, and DISCONNECT: its RECEIPT, then the server closes the connection.
    r.send("UNSUBSCRIBE", [("id", "s"), ("receipt", "unsub-1")])
    assert r.frame().headers == [("receipt-id", "unsub-1")]
    r.send("DISCONNECT", [("receipt", "bye-1")])
    (receipt,) = r.frames_until_closed()
    assert (receipt.command, receipt.headers) == ("RECEIPT", [("receipt-id", "bye-1")])


# --- 9. Transactions ---------------------------------------------------------------------------

def test_transactions(stomp_client, raw, doomed, name):
    doomed(queue=name)
    consumer = stomp_client()
    subscribe(consumer, f"/queue/{name}", "s")
    publisher = stomp_client()
    publisher.begin("tx-1")
    publisher.send(f"/queue/{name}", "one", headers={"transaction": "tx-1", "receipt": "r-one"})
    publisher.send(f"/queue/{name}", "two", headers={"transaction": "tx-1"})
    consumer.frames.quiet(0, 0.5)
    assert not publisher.frames.receipts  # a SEND's receipt waits for the COMMIT
    publisher.commit("tx-1", headers={"receipt": "committed"})
    publisher.frames.wait_receipt("committed")
    publisher.frames.wait_receipt("r-one")
    messages = consumer.frames.wait_messages(2)
    assert bodies(messages) == ["one", "two"]
    assert messages[0].headers["transaction"] == "tx-1"  # a header like any other
    publisher.begin("tx-2")
    publisher.send(f"/queue/{name}", "three", headers={"transaction": "tx-2"})
    publisher.abort("tx-2", headers={"receipt": "aborted"})
    publisher.frames.wait_receipt("aborted")
    consumer.frames.quiet(2, 0.5)
    # Once aborted (or never begun), a transaction is unknown.
    r = raw()
    r.connect()
    r.send("BEGIN", [("transaction", "t")])
    r.send("ABORT", [("transaction", "t")])
    r.send("COMMIT", [("transaction", "t")])
    assert error_text(r.frame()) == ("Bad transaction", 'Invalid transaction identifier: "t"\n')
    r.send("SEND", [("destination", f"/queue/{name}"), ("transaction", "other")], b"x")
    assert error_text(r.frame()) == ("Bad transaction", 'Invalid transaction identifier: "other"\n')
    r.send("BEGIN", [])
    assert error_text(r.frame()) == ("Missing transaction",
                                     "\"BEGIN\" must include a 'transaction' header\n")
    consumer.frames.quiet(2, 0)


# --- 10. Durable topic subscriptions -----------------------------------------------------------

def test_durable_topic_subscription(stomp_client, connect, doomed, name, settle):
    durable = {"durable": "true", "auto-delete": "false"}
    queue = subscription_queue(name, "dsub")
    doomed(queue=queue)
    subscriber = stomp_client()
    subscribe(subscriber, f"/topic/{name}", "dsub", **durable)
    disconnect(subscriber)
    settle()
    conn = connect()
    assert queue_exists(conn, queue)  # RabbitMQ's name for it, visible to AMQP
    conn.channel().queue_declare(queue, durable=True)  # durable, not auto-delete: equivalent
    publisher = stomp_client()
    send(publisher, f"/topic/{name}", "while away")
    assert message_count(conn, queue) == 1
    subscriber = stomp_client()
    subscribe(subscriber, f"/topic/{name}", "dsub", **durable)
    (message,) = subscriber.frames.wait_messages(1)
    assert message.body == "while away"
    assert (message.headers["destination"], message.headers["subscription"]) == \
        (f"/topic/{name}", "dsub")
    subscriber.unsubscribe("dsub", headers={"durable": "true", "receipt": "gone"})
    subscriber.frames.wait_receipt("gone")
    assert not queue_exists(conn, queue)
    # Without auto-delete:false the durable queue still goes with its last consumer.
    subscribe(subscriber, f"/topic/{name}", "brief", durable="true")
    assert queue_exists(conn, subscription_queue(name, "brief"))
    disconnect(subscriber)
    wait_until(lambda: not queue_exists(conn, subscription_queue(name, "brief")),
               what="the auto-delete durable subscription queue to go")


def test_durable_subscription_needs_an_id(raw, name):
    r = raw()
    r.connect()
    r.send("SUBSCRIBE", [("destination", f"/topic/{name}"), ("durable", "true")])
    assert error_text(r.frame()) == ("Missing Header",
                                     "Header 'id' is required for durable subscriptions")


# --- 11. /temp-queue ---------------------------------------------------------------------------

def test_temp_queue_reply_to(stomp_client, connect, doomed, name, settle):
    doomed(queue=name)
    conn = connect()
    ch = conn.channel()
    ch.queue_declare(name, durable=True)
    client = stomp_client()
    send(client, f"/queue/{name}", "question", **{"reply-to": "/temp-queue/rpc",
                                                  "correlation-id": "c-1"})
    _, props, body = get_one(ch, name, auto_ack=True)
    assert body == b"question" and props.correlation_id == "c-1"
    reply_queue = props.reply_to
    assert re.fullmatch(r"amq\.gen-[\w-]{22}", reply_queue), reply_queue
    ch.basic_publish("", reply_queue, b"answer", pika.BasicProperties(correlation_id="c-1"))
    (reply,) = client.frames.wait_messages(1)
    assert reply.body == "answer"
    assert reply.headers["subscription"] == "/temp-queue/rpc"
    assert reply.headers["destination"] == f"/queue/{reply_queue}"
    assert reply.headers["correlation-id"] == "c-1"
    assert reply.headers["message-id"].startswith("T_/temp-queue/rpc@@session-")
    # The same temp queue for the same name on this connection; another for another name.
    send(client, f"/queue/{name}", "again", **{"reply-to": "/temp-queue/rpc"})
    send(client, f"/queue/{name}", "other", **{"reply-to": "/temp-queue/other"})
    _, again, _ = get_one(ch, name, auto_ack=True)
    _, other, _ = get_one(ch, name, auto_ack=True)
    assert again.reply_to == reply_queue and other.reply_to != reply_queue
    # Another STOMP client can answer through /reply-queue/.
    helper = stomp_client()
    settle()
    send(helper, f"/reply-queue/{reply_queue}", "via stomp")
    assert client.frames.wait_messages(2)[1].body == "via stomp"
    # The temp queue belongs to the connection: exclusive, gone when it closes.
    assert channel_error(conn, lambda c: c.queue_declare(reply_queue, passive=True))[0] == 405
    disconnect(client)
    wait_until(lambda: not queue_exists(conn, reply_queue), what="the temp queue to go")


# --- 12. Queue arguments -----------------------------------------------------------------------

def test_subscribe_x_headers_are_queue_arguments(stomp_client, connect, doomed, name):
    doomed(queue=name)
    conn = stomp_client()
    subscribe(conn, f"/queue/{name}", "x", **{
        "x-max-length": "10", "x-message-ttl": "60000", "x-queue-type": "classic",
        "x-dead-letter-exchange": "dlx", "x-overflow": "reject-publish"})
    amqp = connect()
    # x-overflow is not among the headers RabbitMQ takes: the queue has the other four.
    amqp.channel().queue_declare(name, durable=True, arguments={
        "x-max-length": 10, "x-message-ttl": 60000, "x-queue-type": "classic",
        "x-dead-letter-exchange": "dlx"})
    assert channel_error(amqp, lambda c: c.queue_declare(name, durable=True, arguments={
        "x-max-length": 11, "x-message-ttl": 60000, "x-dead-letter-exchange": "dlx"})) == (
        406, f"PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue '{name}' in vhost "
             "'/': received '11' but current is '10'")
    # Integers are of type long.
    assert channel_error(amqp, lambda c: c.queue_declare(name, durable=True, arguments={
        "x-max-length": 10, "x-dead-letter-exchange": "dlx"})) == (
        406, f"PRECONDITION_FAILED - inequivalent arg 'x-message-ttl' for queue '{name}' in "
             "vhost '/': received none but current is the value '60000' of type 'long'")
    assert channel_error(amqp, lambda c: c.queue_declare(name, durable=True, arguments={
        "x-max-length": 10, "x-message-ttl": 60000, "x-dead-letter-exchange": "dlx",
        "x-queue-type": "quorum"})) == (
        406, f"PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue '{name}' in vhost "
             "'/': received 'quorum' but current is 'classic'")


# --- 13. Bad input -----------------------------------------------------------------------------

def test_bad_frames_after_connect(raw, doomed, name):
    doomed(queue=name)
    r = raw()
    r.connect()
    r.send("FOO", [("a", "b")])
    error = r.frame()
    assert error.names == ["message", "content-type", "version", "content-length"]
    assert error_text(error) == ("Bad command", 'Could not interpret command "FOO"\n')
    r.send("SEND", [("receipt", "x")], b"body")
    assert error_text(r.frame()) == ("Missing destination",
                                     "\"SEND\" must include a 'destination' header\n")
    r.send("SUBSCRIBE", [("id", "1")])
    assert error_text(r.frame()) == ("Missing destination",
                                     "\"SUBSCRIBE\" must include a 'destination' header\n")
    r.send("SEND", [("destination", "/foo/bar")], b"x")
    assert error_text(r.frame()) == (
        "Unknown destination", "'/foo/bar' is not a valid destination.\nValid destination types "
        "are: /temp-queue, /exchange, /topic, /queue, /amq/queue, /reply-queue/.\n")
    r.send("SEND", [("destination", f"/queue/{name}"), ("message-id", "m")], b"x")
    assert error_text(r.frame()) == ("Invalid header", "'message-id' is not allowed on 'SEND'.\n")
    r.send("ACK", [("id", "bogus")])
    assert error_text(r.frame()) == ("Invalid header", '"ACK" must include a valid "id" header\n')
    r.send("UNSUBSCRIBE", [("id", "nope")])
    assert error_text(r.frame()) == (
        "No subscription found", "UNSUBSCRIBE must refer to an existing subscription.\n"
        "Subscription to \"id='nope'\" not found.\n")
    # None of these ends the session.
    r.send("SUBSCRIBE", [("destination", f"/queue/{name}"), ("id", "t"), ("receipt", "still")])
    assert r.frame().headers == [("receipt-id", "still")]
    # A second subscription with the same id does: one ERROR, then the server closes.
    r.send("SUBSCRIBE", [("destination", f"/queue/{name}"), ("id", "t")])
    (error,) = r.frames_until_closed()
    assert error_text(error) == ("Duplicated subscription identifier",
                                 "A subscription identified by 'T_t' already exists.")


def test_bad_bytes_before_connect(raw):
    # A well-formed frame other than CONNECT: an ERROR (the connection stays unusable).
    r = raw()
    r.sendall(b"garbage garbage\n\n\0")
    assert error_text(r.frame()) == ("Illegal command", "You must log in using CONNECT first")
    # Bytes that are no frame at all: the server closes the connection, RabbitMQ without a
    # word, Warren after an ERROR saying why (issue 20: an ERROR where the protocol has one).
    def closed_for_bad_bytes(frames):
        return frames == [] or (len(frames) == 1 and frames[0].command == "ERROR"
                                and frames[0]["message"] == "Invalid frame")
    for junk in (b"hello\rworld", b"CONNECT\nno-colon-here\n\n\0"):
        r = raw()
        r.sendall(junk)
        assert closed_for_bad_bytes(r.frames_until_closed(3)), junk
    # Likewise an undefined escape in a 1.2 header.
    r = raw()
    r.connect("1.2")
    r.sendall(b"SEND\ndestination:/queue/x\nbad:escape\\q\n\nbody\0")
    assert closed_for_bad_bytes(r.frames_until_closed(3))


def test_long_headers(raw, stomp_client, connect, doomed, name):
    doomed(queue=name)
    # 64 KiB of header value goes through (RabbitMQ 3.10 has no limit at all).
    r = raw()
    r.connect()
    r.send("SEND", [("destination", f"/queue/{name}"), ("x-long", "a" * 65536),
                    ("receipt", "long")], b"body")
    assert r.frame().headers == [("receipt-id", "long")]
    _, props, _ = get_one(connect().channel(), name, auto_ack=True)
    assert props.headers["x-long"] == "a" * 65536
    # 1 MiB in one header: RabbitMQ 3.10 takes it too; later versions (stomp.max_header_length,
    # 100 KiB by default) answer with an ERROR and close. Either, but never a hang or a silent
    # close; and the server goes on serving others.
    r = raw()
    r.connect()
    r.send("SEND", [("destination", f"/queue/{name}"), ("x-huge", "b" * (1 << 20)),
                    ("receipt", "huge")], b"body")
    frame = r.frame(10)
    if frame.command == "RECEIPT":
        assert frame.headers == [("receipt-id", "huge")]
    else:
        assert frame.command == "ERROR", frame
        r.frames_until_closed()
    conn = stomp_client()
    send(conn, f"/queue/{name}", "still fine")


def test_server_survives_bad_clients(raw, stomp_client, connect, doomed, name):
    doomed(queue=name)
    abusers = []
    for junk in (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",  # a TLS client hello
                 b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
                 b"CONNECT\naccept-version:1.2\nlogin:gu",       # half a frame, then gone
                 b"\0\0\n\n\r"):
        r = raw()
        r.sendall(junk)
        abusers.append(r)
    abusers[2].close()
    conn = stomp_client()
    subscribe(conn, f"/queue/{name}", "ok")
    send(stomp_client(), f"/queue/{name}", "still serving")
    assert conn.frames.wait_messages(1)[0].body == "still serving"
    connect().channel().queue_declare(name, passive=True)


# --- 14. Heart-beats ---------------------------------------------------------------------------

@pytest.mark.parametrize("asked, answered", [
    ("0,0", "0,0"), ("0,1000", "1000,0"), ("1000,0", "0,1000"), ("5000,200", "1000,5000"),
    ("2500,2500", "2000,2000"), ("0,999", "1000,0"), ("0,60000", "60000,0")])
def test_heart_beat_negotiation(raw, asked, answered):
    # RabbitMQ works in whole seconds: under 1 s is 1 s, the rest is rounded down.
    r = raw()
    assert r.connect(extra=[("heart-beat", asked)])["heart-beat"] == answered


def test_server_sends_heart_beats(raw, stomp_client):
    r = raw()
    assert r.connect(extra=[("heart-beat", "0,1000")])["heart-beat"] == "1000,0"
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and r.beats < 2:
        r._fill(deadline)
        r._skip_eols(1)
    assert r.beats >= 2 and r.buf == b"", (r.beats, r.buf)
    # stomp.py sees them too, and keeps the connection.
    conn = stomp_client("1.2", heartbeats=(0, 1000))
    assert conn.frames.connected[0].headers["heart-beat"] == "1000,0"
    conn.frames.until(lambda: conn.frames.heartbeats >= 2, "2 heart-beats", 3.5)
    assert conn.is_connected()


# --- 15. Across nodes --------------------------------------------------------------------------

def test_across_nodes(stomp_client, connect, doomed, name, settle):
    doomed(queue=name)
    subscriber = stomp_client(what="STOMP subscriber")
    publisher = stomp_client(what="STOMP publisher")  # the next node
    subscribe(subscriber, f"/queue/{name}", "q")
    subscribe(subscriber, f"/topic/{name}", "t")
    settle()
    send(publisher, f"/queue/{name}", "queue, stomp")
    send(publisher, f"/topic/{name}", "topic, stomp")
    ch = connect().channel()  # the node after
    ch.basic_publish("", name, b"queue, amqp")
    ch.basic_publish("amq.topic", name, b"topic, amqp")
    messages = subscriber.frames.wait_messages(4)
    by_sub = {s: [m.body for m in messages if m.headers["subscription"] == s] for s in "qt"}
    assert by_sub == {"q": ["queue, stomp", "queue, amqp"], "t": ["topic, stomp", "topic, amqp"]}
    # And AMQP consumers get what STOMP sends on another node.
    subscriber.unsubscribe("q", headers={"receipt": "unsubscribed"})
    subscriber.frames.wait_receipt("unsubscribed")
    send(publisher, f"/queue/{name}", "to amqp")
    _, _, body = get_one(ch, name, auto_ack=True)
    assert body == b"to amqp"
