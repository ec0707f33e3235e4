"""MQTT 3.1.1 and 5.0 as RabbitMQ's MQTT plugin serves them, through paho-mqtt 2.1 and, for exact
packets and for what paho never sends, a bare socket: connecting (credentials, vhosts, client
ids, takeover), QoS 0/1 (and QoS 2 downgraded to 1), topic filters, the mapping onto amq.topic
seen with pika both ways, retained messages, clean and persistent sessions (the queues
`mqtt-subscription-<client id>qos0|1`), wills, keep-alive, MQTT 5 properties and reason codes, bad
input, and several nodes. The MQTT clients of a test are spread over the nodes like its AMQP
connections (`mqtt_address`, conftest.py). The reference behaviour was observed on RabbitMQ 3.10.8
and mosquitto 2.0.11; docs/compatibility.md ("MQTT and Web-MQTT") lists what Warren does.

Which broker, and what runs against it:
* Warren (the default, nodes started by conftest.py): every test.
* RabbitMQ 3.10 with rabbitmq_mqtt (MQTT 3.1.1 only): `WARREN_TEST_URL=amqp://...`,
  `WARREN_TEST_MQTT=host:port` and `WARREN_TEST_MQTT5=0`, which skips the tests marked `mqtt5`.
* A plain MQTT broker with no AMQP side, e.g. mosquitto (the MQTT 5 reference):
  `WARREN_TEST_URL=none` and `WARREN_TEST_MQTT=host:port`. Tests that use pika (the `connect`
  fixture) are skipped by conftest.py, and are marked `amqp` here to say so; tests marked
  `rabbitmq` check what RabbitMQ's plugin does differently from a plain MQTT broker (users and
  vhosts, QoS 2 acknowledged as QoS 1, one queue per QoS, topics as amq.topic routing keys, the
  unauthenticated packet limit) and are skipped there too.
"""
import base64
import json
import os
import socket
import struct
import threading
import time
import urllib.request

import paho.mqtt.client as paho
import pika
import pytest
import stomp
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

TIMEOUT = 5
# The broker has no AMQP side: a plain MQTT broker (mosquitto), not RabbitMQ's plugin.
PLAIN_MQTT = os.environ.get("WARREN_TEST_URL", "").strip().lower() == "none"
MQTT5 = os.environ.get("WARREN_TEST_MQTT5", "1") != "0"

amqp = pytest.mark.skipif(PLAIN_MQTT, reason="uses pika: the broker has no AMQP side "
                          "(WARREN_TEST_URL=none)")
rabbitmq = pytest.mark.skipif(PLAIN_MQTT, reason="RabbitMQ's MQTT plugin behaviour, not a plain "
                              "MQTT broker's (WARREN_TEST_URL=none)")
mqtt5 = pytest.mark.skipif(not MQTT5, reason="WARREN_TEST_MQTT5=0: the broker speaks MQTT 3.1.1 "
                           "only (RabbitMQ 3.10)")

# Packet types (MQTT 3.1.1 section 2.2.1).
CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC = 1, 2, 3, 4, 5
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK = 8, 9, 10, 11
PINGREQ, PINGRESP, DISCONNECT = 12, 13, 14


# --- paho clients ------------------------------------------------------------------------------

class Mqtt:
    """One paho client with its network thread: what it received, in order, for a test to wait
    on. It never reconnects by itself (a taken-over client would take its id back)."""

    def __init__(self, address, client_id, settle, version=4, clean=True, user="guest",
                 password="guest", keepalive=60, will=None, properties=None):
        self.address, self.client_id, self.version = address, client_id, version
        self._settle = settle
        self.cond = threading.Condition()
        self.connack = None  # (session_present, reason code value, properties)
        self.messages, self.subacks, self.unsubacks, self.pubacks = [], {}, {}, {}
        self.disconnects = []  # reason code values
        v5 = version == 5
        c = self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id,
            clean_session=None if v5 else clean,
            protocol=paho.MQTTv5 if v5 else paho.MQTTv311, reconnect_on_failure=False)
        if user is not None:
            c.username_pw_set(user, password)
        if will:
            c.will_set(**will)
        c.on_connect = self._on_connect
        c.on_message = lambda _c, _u, m: self._add(self.messages, m)
        c.on_subscribe = lambda _c, _u, mid, codes, _p: self._put(self.subacks, mid, codes)
        c.on_unsubscribe = lambda _c, _u, mid, codes, _p: self._put(self.unsubacks, mid, codes)
        c.on_publish = lambda _c, _u, mid, code, _p: self._put(self.pubacks, mid, code)
        c.on_disconnect = lambda _c, _u, _f, code, _p: self._add(self.disconnects, code.value)
        c.connect(address[0], address[1], keepalive,
                  clean_start=clean if v5 else paho.MQTT_CLEAN_START_FIRST_ONLY,
                  properties=properties)
        c.loop_start()
        self.until(lambda: self.connack or self.disconnects, "CONNACK")

    def _on_connect(self, _c, _u, flags, code, props):
        with self.cond:
            self.connack = (flags.session_present, code.value, props)
            self.cond.notify_all()

    def _add(self, items, item):
        with self.cond:
            items.append(item)
            self.cond.notify_all()

    def _put(self, table, key, value):
        with self.cond:
            table[key] = value
            self.cond.notify_all()

    def until(self, predicate, what, timeout=TIMEOUT):
        with self.cond:
            if not self.cond.wait_for(predicate, timeout):
                raise AssertionError(f"{self.client_id}: no {what} within {timeout}s; messages "
                                     f"{[(m.topic, m.payload) for m in self.messages]}")

    @property
    def session_present(self):
        return self.connack[0]

    def subscribe(self, *filters, properties=None):
        """SUBSCRIBE (topic, qos-or-SubscribeOptions) pairs; the SUBACK's codes once it came.
        Then every node has applied the bindings (settle), as a publisher elsewhere needs."""
        _, mid = self.client.subscribe(list(filters), properties=properties)
        self.until(lambda: mid in self.subacks, "SUBACK")
        self._settle()
        return [c.value for c in self.subacks[mid]]

    def unsubscribe(self, *topics):
        _, mid = self.client.unsubscribe(list(topics))
        self.until(lambda: mid in self.unsubacks, "UNSUBACK")
        self._settle()
        return [c.value for c in self.unsubacks[mid]] if self.version == 5 else []

    def publish(self, topic, payload, qos=0, retain=False, properties=None):
        """PUBLISH; for QoS 1 waits for the PUBACK and returns its reason code (0 in 3.1.1)."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        if qos == 0:
            return None
        info.wait_for_publish(TIMEOUT)
        assert info.is_published(), f"no PUBACK within {TIMEOUT}s for {topic!r}"
        self.until(lambda: info.mid in self.pubacks, "on_publish")
        return self.pubacks[info.mid].value

    def wait_messages(self, count, timeout=TIMEOUT):
        """The first `count` PUBLISH packets received, once they came."""
        self.until(lambda: len(self.messages) >= count, f"{count} message(s)", timeout)
        return self.messages[:count]

    def quiet(self, count, seconds=0.5):
        """Checks that no PUBLISH beyond the first `count` comes within `seconds`."""
        time.sleep(seconds)
        with self.cond:
            assert len(self.messages) == count, \
                f"unexpected messages {[(m.topic, m.payload) for m in self.messages[count:]]}"

    def wait_disconnected(self, timeout=TIMEOUT):
        self.until(lambda: self.disconnects, "disconnection", timeout)

    def disconnect(self, properties=None):
        """DISCONNECT, then waits until paho saw the connection end."""
        self.client.disconnect(properties=properties)
        self.wait_disconnected()
        self.client.loop_stop()

    def close(self):
        try:
            if self.client.is_connected():
                self.client.disconnect()
            self.client.loop_stop()
        except Exception:
            pass


@pytest.fixture
def mqtt(mqtt_address, settle, name):
    """mqtt(client_id=None, version=4, clean=True, ..., address=None) -> a paho client connected
    to the next node (or to `address`), its CONNACK received (`.connack`; a refusal is the
    caller's to check); client ids default to unique ones. Those still open after the test
    disconnect."""
    opened = []

    def open_(client_id=None, *, address=None, what=None, **options):
        client_id = f"{name}-{len(opened)}" if client_id is None else client_id
        address = address or mqtt_address(what or f"MQTT client {client_id!r}")
        client = Mqtt(address, client_id, settle, **options)
        opened.append(client)
        return client

    yield open_
    for client in opened:
        client.close()


def props(packet_type, **values):
    """paho Properties of `packet_type` (PacketTypes.PUBLISH, ...) with the given values."""
    p = Properties(packet_type)
    for key, value in values.items():
        setattr(p, key, value)
    return p


# --- bare sockets ------------------------------------------------------------------------------

def _varint(n):
    out = b""
    while True:
        n, byte = divmod(n, 128)
        out += bytes([byte | (0x80 if n else 0)])
        if not n:
            return out


def _str(value):
    value = value.encode() if isinstance(value, str) else value
    return struct.pack(">H", len(value)) + value


def packet(kind, flags, body=b""):
    return bytes([(kind << 4) | flags]) + _varint(len(body)) + body


def connect_packet(client_id, user="guest", password="guest", clean=True, keepalive=60,
                   will=None, level=4, protocol="MQTT"):
    """A CONNECT (3.1.1 layout); `will` is (topic, payload, qos, retain)."""
    flags, payload = (0x02 if clean else 0), _str(client_id)
    if will:
        topic, message, qos, retain = will
        flags |= 0x04 | (qos << 3) | (0x20 if retain else 0)
        payload += _str(topic) + _str(message)
    if user is not None:
        flags |= 0x80
        payload += _str(user)
    if password is not None:
        flags |= 0x40
        payload += _str(password)
    header = _str(protocol) + bytes([level, flags]) + struct.pack(">H", keepalive)
    return packet(CONNECT, 0, header + payload)


def publish_packet(topic, payload, qos=0, retain=False, dup=False, packet_id=1):
    flags = (qos << 1) | (1 if retain else 0) | (8 if dup else 0)
    return packet(PUBLISH, flags, _str(topic) + (struct.pack(">H", packet_id) if qos else b"")
                  + payload)


def subscribe_packet(packet_id, *filters):
    return packet(SUBSCRIBE, 2, struct.pack(">H", packet_id)
                  + b"".join(_str(t) + bytes([q]) for t, q in filters))


def parse_publish(flags, body):
    """(topic, qos, dup, retain, packet id or None, payload) of a PUBLISH packet."""
    (length,) = struct.unpack(">H", body[:2])
    topic, rest, qos = body[2:2 + length].decode(), body[2 + length:], (flags >> 1) & 3
    packet_id = None
    if qos:
        (packet_id,), rest = struct.unpack(">H", rest[:2]), rest[2:]
    return topic, qos, bool(flags & 8), bool(flags & 1), packet_id, rest


class Raw:
    """A bare TCP connection to an MQTT listener, read packet by packet."""

    def __init__(self, address):
        self.address = address
        self.sock = socket.create_connection(address, timeout=TIMEOUT)
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self, size, deadline):
        while len(self.buf) < size:
            self.sock.settimeout(max(0.01, deadline - time.time()))
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("connection closed by the server")
            self.buf += data

    def read(self, timeout=TIMEOUT):
        """The next packet as (type, flags, body); EOFError if the server closed first,
        socket.timeout if nothing came in time."""
        deadline = time.time() + timeout
        self._fill(2, deadline)
        length, shift, i = 0, 0, 1
        while True:
            self._fill(i + 1, deadline)
            length |= (self.buf[i] & 0x7F) << shift
            shift, i = shift + 7, i + 1
            if not self.buf[i - 1] & 0x80:
                break
        self._fill(i + length, deadline)
        first, body, self.buf = self.buf[0], self.buf[i:i + length], self.buf[i + length:]
        return first >> 4, first & 0x0F, body

    def connack(self, timeout=TIMEOUT):
        """(session present, return code) of the CONNACK that must come next."""
        kind, flags, body = self.read(timeout)
        assert (kind, flags, len(body)) == (CONNACK, 0, 2), (kind, flags, body)
        return bool(body[0] & 1), body[1]

    def packets_until_closed(self, timeout=TIMEOUT):
        """Every packet the server sends until it closes the connection (an RST counts);
        fails if it is still open after `timeout` seconds."""
        deadline, packets = time.time() + timeout, []
        try:
            while True:
                packets.append(self.read(max(0.01, deadline - time.time())))
        except (EOFError, ConnectionResetError):
            return packets
        except socket.timeout:
            raise AssertionError(f"still open after {timeout}s (received {packets})") from None

    def still_open(self, seconds=0.5):
        """True if the server neither sent anything nor closed within `seconds`."""
        try:
            self.read(seconds)
        except socket.timeout:
            return True
        except (EOFError, ConnectionResetError):
            return False
        return False

    def drop(self):
        """Closes abruptly (RST, no DISCONNECT), as a client whose network died."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


@pytest.fixture
def raw(mqtt_address):
    """raw(address=None) -> a bare socket to the next node's MQTT listener (or `address`);
    closed after the test."""
    opened = []

    def open_(address=None, what="bare MQTT socket"):
        conn = Raw(address or mqtt_address(what))
        opened.append(conn)
        return conn

    yield open_
    for conn in opened:
        conn.close()


def raw_client(raw, client_id, address=None, **connect_options):
    """A bare socket with an accepted CONNECT."""
    conn = raw(address)
    conn.send(connect_packet(client_id, **connect_options))
    assert conn.connack() == (False, 0)
    return conn


def still_serves(mqtt, name):
    """Another client connects, subscribes and gets its own publish: the listener still works."""
    client = mqtt()
    assert client.connack[1] == 0
    assert client.subscribe((f"{name}/alive", 1)) == [1]
    client.publish(f"{name}/alive", b"yes", qos=1)
    assert client.wait_messages(1)[0].payload == b"yes"


# --- 1. CONNECT / CONNACK ----------------------------------------------------------------------

def test_connect_with_guest_gets_connack_accepted_without_session(raw, mqtt, name):
    conn = raw()
    conn.send(connect_packet(f"{name}-raw"))
    assert conn.read() == (CONNACK, 0, b"\x00\x00")
    assert conn.still_open()
    client = mqtt()
    assert client.connack[:2] == (False, 0)
    assert client.client.is_connected()


@rabbitmq
@pytest.mark.parametrize("user,password", [("guest", "wrong"), ("nobody-here", "guest")])
def test_wrong_credentials_get_connack_4_then_close(raw, name, user, password):
    conn = raw()
    conn.send(connect_packet(f"{name}-bad", user=user, password=password))
    assert conn.read() == (CONNACK, 0, b"\x00\x04")  # bad user name or password
    assert conn.packets_until_closed() == []


def test_connect_without_credentials_is_the_default_user(raw, name):
    """RabbitMQ: allow_anonymous (default true) logs in as default_user guest (from loopback)."""
    conn = raw()
    conn.send(connect_packet(f"{name}-anon", user=None, password=None))
    assert conn.connack() == (False, 0)
    conn.send(subscribe_packet(1, (f"{name}/anon", 0)))
    assert conn.read() == (SUBACK, 0, b"\x00\x01\x00")


@rabbitmq
def test_vhost_in_username(raw, name):
    """`vhost:user` names the vhost (split at the last colon); a vhost that does not exist
    refuses with code 4 like a bad password."""
    conn = raw()
    conn.send(connect_packet(f"{name}-vh", user="/:guest"))
    assert conn.connack() == (False, 0)
    conn.send(subscribe_packet(1, (f"{name}/vh", 1)))
    assert conn.read() == (SUBACK, 0, b"\x00\x01\x01")
    missing = raw()
    missing.send(connect_packet(f"{name}-novh", user=f"{name}-no-such-vhost:guest"))
    assert missing.read() == (CONNACK, 0, b"\x00\x04")
    assert missing.packets_until_closed() == []


def test_empty_client_id_with_clean_session_is_accepted(mqtt, name):
    client = mqtt("")
    assert client.connack[:2] == (False, 0)
    assert client.subscribe((f"{name}/anon-id", 1)) == [1]
    client.publish(f"{name}/anon-id", b"to myself", qos=1)
    assert client.wait_messages(1)[0].payload == b"to myself"


def test_empty_client_id_without_clean_session_is_refused_with_code_2(raw):
    conn = raw()
    conn.send(connect_packet("", clean=False))
    assert conn.read() == (CONNACK, 0, b"\x00\x02")  # identifier rejected
    assert conn.packets_until_closed() == []


def test_second_connection_with_the_same_client_id_takes_over(mqtt, name):
    first = mqtt(f"{name}-dup")
    second = mqtt(f"{name}-dup")
    assert second.connack[1] == 0
    first.wait_disconnected()
    assert second.subscribe((f"{name}/dup", 1)) == [1]
    second.publish(f"{name}/dup", b"still here", qos=1)
    assert second.wait_messages(1)[0].payload == b"still here"
    assert second.client.is_connected()


# --- 2. QoS ------------------------------------------------------------------------------------

def test_qos0_between_clients(mqtt, name):
    sub, pub = mqtt(), mqtt()
    assert sub.subscribe((f"{name}/q0", 0)) == [0]
    assert pub.publish(f"{name}/q0", b"hello") is None
    (m,) = sub.wait_messages(1)
    assert (m.topic, m.payload, m.qos, m.retain, m.dup) == (f"{name}/q0", b"hello", 0, False,
                                                              False)
    sub.quiet(1)


def test_qos1_publish_gets_puback_with_its_packet_id_and_reaches_qos1_subscriber(mqtt, raw,
                                                                                  name):
    sub = mqtt()
    assert sub.subscribe((f"{name}/q1", 1)) == [1]
    pub = raw_client(raw, f"{name}-pub")
    pub.send(publish_packet(f"{name}/q1", b"acked", qos=1, packet_id=0x1234))
    assert pub.read() == (PUBACK, 0, b"\x12\x34")
    (m,) = sub.wait_messages(1)
    assert (m.topic, m.payload, m.qos, m.retain, m.dup) == (f"{name}/q1", b"acked", 1, False,
                                                              False)


def test_delivered_qos_is_the_lower_of_publish_and_subscription(mqtt, name):
    low, high, pub = mqtt(), mqtt(), mqtt()
    assert low.subscribe((f"{name}/min", 0)) == [0]
    assert high.subscribe((f"{name}/min", 1)) == [1]
    pub.publish(f"{name}/min", b"one", qos=1)
    pub.publish(f"{name}/min", b"zero", qos=0)
    assert [(m.payload, m.qos) for m in low.wait_messages(2)] == [(b"one", 0), (b"zero", 0)]
    assert [(m.payload, m.qos) for m in high.wait_messages(2)] == [(b"one", 1), (b"zero", 0)]


@rabbitmq
def test_qos2_is_served_as_qos1(mqtt, raw, name):
    """SUBSCRIBE with QoS 2 is granted 1; a QoS 2 PUBLISH gets a PUBACK (no PUBREC) and is
    delivered at QoS 1."""
    sub = raw_client(raw, f"{name}-sub")
    sub.send(subscribe_packet(3, (f"{name}/q2", 2)))
    assert sub.read() == (SUBACK, 0, b"\x00\x03\x01")
    pub = raw_client(raw, f"{name}-pub")
    pub.send(publish_packet(f"{name}/q2", b"exactly once?", qos=2, packet_id=7))
    assert pub.read() == (PUBACK, 0, b"\x00\x07")
    kind, flags, body = sub.read()
    assert kind == PUBLISH
    topic, qos, dup, retain, packet_id, payload = parse_publish(flags, body)
    assert (topic, qos, dup, retain, payload) == (f"{name}/q2", 1, False, False, b"exactly once?")
    sub.send(packet(PUBACK, 0, struct.pack(">H", packet_id)))
    assert sub.still_open()


def test_unsubscribe_stops_delivery(mqtt, name):
    sub, pub = mqtt(), mqtt()
    assert sub.subscribe((f"{name}/u", 1)) == [1]
    pub.publish(f"{name}/u", b"before", qos=1)
    assert sub.wait_messages(1)[0].payload == b"before"
    sub.unsubscribe(f"{name}/u")
    pub.publish(f"{name}/u", b"after", qos=1)
    sub.quiet(1)


@rabbitmq
def test_overlapping_filters_deliver_one_copy_per_qos(mqtt, name):
    """Filters of one QoS bind one queue (one copy however many match); a message matching a
    QoS 0 and a QoS 1 filter comes once from each queue. (MQTT 3.1.1 section 3.3.5 allows the
    extra copy; mosquitto sends one at the highest QoS.)"""
    sub, pub = mqtt(), mqtt()
    assert sub.subscribe((f"{name}/o/a", 1), (f"{name}/o/+", 1), (f"{name}/#", 0)) == [1, 1, 0]
    pub.publish(f"{name}/o/a", b"both", qos=1)
    assert sorted((m.payload, m.qos) for m in sub.wait_messages(2)) == [(b"both", 0),
                                                                          (b"both", 1)]
    pub.publish(f"{name}/o/b", b"qos1 filter and qos0 filter", qos=0)
    pub.publish(f"{name}/x", b"qos0 filter only", qos=1)
    got = sorted((m.topic, m.qos) for m in sub.wait_messages(5)[2:])
    assert got == [(f"{name}/o/b", 0), (f"{name}/o/b", 0), (f"{name}/x", 0)]
    sub.quiet(5)


# --- 3. Topic filters --------------------------------------------------------------------------

def test_single_level_wildcard(mqtt, name):
    sub, pub = mqtt(), mqtt()
    assert sub.subscribe((f"{name}/+/x", 1)) == [1]
    for topic in (f"{name}/a/x", f"{name}/a/b/x", f"{name}/x", f"{name}/b/x", f"{name}/b/y"):
        pub.publish(topic, topic.encode(), qos=1)
    assert [m.topic for m in sub.wait_messages(2)] == [f"{name}/a/x", f"{name}/b/x"]
    sub.quiet(2)


def test_multi_level_wildcard_includes_the_parent_level(mqtt, name):
    sub, pub = mqtt(), mqtt()
    assert sub.subscribe((f"{name}/h/#", 1)) == [1]
    for topic in (f"{name}/h", f"{name}/h/i", f"{name}/h/i/j", f"{name}/hh", f"{name}/g/h"):
        pub.publish(topic, b"", qos=1)
    assert [m.topic for m in sub.wait_messages(3)] == [f"{name}/h", f"{name}/h/i",
                                                       f"{name}/h/i/j"]
    sub.quiet(3)


@rabbitmq
def test_wildcards_match_dollar_topics_as_amq_topic_does(mqtt, name):
    """Filters are amq.topic bindings, so `+` and `#` match a first level starting with `$`
    (MQTT 3.1.1 section 4.7.2 says they should not; mosquitto does not match them)."""
    sub, pub = mqtt(), mqtt()
    assert sub.subscribe((f"+/{name}", 1), (f"$x-{name}/#", 1)) == [1, 1]
    pub.publish(f"$sys/{name}", b"dollar", qos=1)
    pub.publish(f"$sys/{name}/deeper", b"not +", qos=1)
    pub.publish(f"$x-{name}/a/b", b"explicit", qos=1)
    pub.publish(f"plain/{name}", b"plain", qos=1)
    assert [m.topic for m in sub.wait_messages(3)] == [f"$sys/{name}", f"$x-{name}/a/b",
                                                       f"plain/{name}"]
    sub.quiet(3)


@rabbitmq
def test_a_dot_in_a_topic_is_a_level_separator(mqtt, name):
    """Topics become routing keys with `/` -> `.`, and back with `.` -> `/`: a `.` in an MQTT
    topic splits a level on the AMQP side, and subscribers see it as `/`."""
    sub, pub = mqtt(), mqtt()
    assert sub.subscribe((f"{name}/a/b", 1), (f"{name}/c.d", 1)) == [1, 1]
    pub.publish(f"{name}/a.b", b"dot", qos=1)
    pub.publish(f"{name}/c/d", b"slash", qos=1)
    got = [(m.topic, m.payload) for m in sub.wait_messages(2)]
    assert got == [(f"{name}/a/b", b"dot"), (f"{name}/c/d", b"slash")]
    sub.quiet(2)


# --- 4. Across protocols (pika) ----------------------------------------------------------------

@amqp
def test_mqtt_publishes_reach_amqp_with_rabbitmqs_properties(connect, raw, settle, name):
    ch = connect().channel()
    queue = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(queue, "amq.topic", f"{name}.#")
    settle()
    pub = raw_client(raw, f"{name}-pub")
    sent = [(f"{name}/a/b", b"q0", 0, False, False), (f"{name}/a/b", b"q1", 1, False, False),
            (f"{name}/a/b", b"q1 dup", 1, False, True), (f"{name}/a/b", b"q2", 2, False, False),
            (f"{name}/a.b", b"dot", 0, False, False), (f"{name}/r", b"retained", 1, True, False)]
    for i, (topic, payload, qos, retain, dup) in enumerate(sent, start=1):
        pub.send(publish_packet(topic, payload, qos=qos, retain=retain, dup=dup, packet_id=i))
        if qos:
            assert pub.read() == (PUBACK, 0, struct.pack(">H", i))
    pub.send(publish_packet(f"{name}/r", b"", retain=True))  # clears the retained message
    got = {}  # body -> (exchange, routing key, redelivered, properties)
    deadline = time.time() + TIMEOUT
    while len(got) < 7 and time.time() < deadline:
        method, properties, body = ch.basic_get(queue, auto_ack=True)
        if method:
            got[body] = (method.exchange, method.routing_key, method.redelivered, properties)
        else:
            time.sleep(0.05)
    # body: routing key, delivery mode, x-mqtt-publish-qos, x-mqtt-dup
    expected = {b"q0": ("a.b", 1, 0, False), b"q1": ("a.b", 2, 1, False),
                b"q1 dup": ("a.b", 2, 1, True), b"q2": ("a.b", 2, 1, False),
                b"dot": ("a.b", 1, 0, False), b"retained": ("r", 2, 1, False),
                b"": ("r", 1, 0, False)}
    assert sorted(got) == sorted(expected)
    for body, (key, mode, qos, dup) in expected.items():
        exchange, routing_key, redelivered, p = got[body]
        assert (exchange, routing_key, redelivered) == ("amq.topic", f"{name}.{key}", False)
        assert p.delivery_mode == mode
        assert p.headers == {"x-mqtt-publish-qos": qos, "x-mqtt-dup": dup}
        assert type(p.headers["x-mqtt-dup"]) is bool
        others = (p.content_type, p.content_encoding, p.priority, p.correlation_id, p.reply_to,
                  p.expiration, p.message_id, p.timestamp, p.type, p.user_id, p.app_id)
        assert others == (None,) * 11, body


@amqp
def test_amqp_publishes_reach_mqtt_subscribers(connect, mqtt, name):
    """No x-mqtt-publish-qos header: delivered at the subscription's QoS; x-mqtt-dup: true sets
    DUP (as a redelivery does); AMQP properties do not show in MQTT 3.1.1."""
    low, high = mqtt(), mqtt()
    assert low.subscribe((f"{name}/x", 0)) == [0]
    assert high.subscribe((f"{name}/x", 1)) == [1]
    ch = connect().channel()
    ch.basic_publish("amq.topic", f"{name}.x", b"plain")
    ch.basic_publish("amq.topic", f"{name}.x", b"persistent",
                     pika.BasicProperties(delivery_mode=2, content_type="text/plain",
                                          correlation_id="c1", headers={"k": "v"}))
    ch.basic_publish("amq.topic", f"{name}.x", b"dup",
                     pika.BasicProperties(headers={"x-mqtt-dup": True}))
    got = [(m.topic, m.payload, m.qos, m.retain, m.dup) for m in high.wait_messages(3)]
    assert got == [(f"{name}/x", b"plain", 1, False, False),
                   (f"{name}/x", b"persistent", 1, False, False),
                   (f"{name}/x", b"dup", 1, False, True)]
    # The QoS 0 subscriber does not get a message marked as a duplicate at QoS 0 (RabbitMQ drops
    # it: "at most once").
    got = [(m.topic, m.payload, m.qos, m.retain, m.dup) for m in low.wait_messages(2)]
    assert got == [(f"{name}/x", b"plain", 0, False, False),
                   (f"{name}/x", b"persistent", 0, False, False)]
    low.quiet(2)
    high.quiet(3)


# --- 5. Retained messages ----------------------------------------------------------------------

def test_retained_message_goes_to_later_subscribers_until_cleared(mqtt, name):
    """On one node: RabbitMQ's retained store is node-local (docs/compatibility.md). A retained
    message goes with the retain flag to a subscription made later, at the lower QoS of the two;
    to subscribers present when it is published, without. An empty retained payload clears it
    (and is delivered like any message)."""
    pub = mqtt()
    here = {"address": pub.address}
    present = mqtt(**here)
    assert present.subscribe((f"{name}/r", 1)) == [1]
    pub.publish(f"{name}/r", b"kept", qos=1, retain=True)
    (m,) = present.wait_messages(1)
    assert (m.payload, m.qos, m.retain) == (b"kept", 1, False)
    later = mqtt(**here)
    assert later.subscribe((f"{name}/r", 1)) == [1]
    (m,) = later.wait_messages(1)
    assert (m.topic, m.payload, m.qos, m.retain) == (f"{name}/r", b"kept", 1, True)
    later0 = mqtt(**here)
    assert later0.subscribe((f"{name}/r", 0)) == [0]
    (m,) = later0.wait_messages(1)
    assert (m.payload, m.qos, m.retain) == (b"kept", 0, True)
    pub.publish(f"{name}/r", b"", qos=1, retain=True)
    (_, m) = present.wait_messages(2)
    assert (m.payload, m.retain) == (b"", False)
    after = mqtt(**here)
    assert after.subscribe((f"{name}/r", 1)) == [1]
    after.quiet(0)


def test_retained_message_is_replaced_by_the_next(mqtt, name):
    pub = mqtt()
    pub.publish(f"{name}/rr", b"first", qos=1, retain=True)
    pub.publish(f"{name}/rr", b"second", qos=1, retain=True)
    sub = mqtt(address=pub.address)
    assert sub.subscribe((f"{name}/rr", 1)) == [1]
    assert [(m.payload, m.retain) for m in sub.wait_messages(1)] == [(b"second", True)]
    sub.quiet(1)
    pub.publish(f"{name}/rr", b"", qos=1, retain=True)


# --- 6. Clean and persistent sessions ----------------------------------------------------------

def test_persistent_session_keeps_qos1_messages_across_reconnects(mqtt, name):
    """clean_session=0: the QoS 1 subscription outlives the connection; what is published
    meanwhile comes on reconnection (to the next node in a cluster) with session present = 1.
    clean_session=1 then drops the session."""
    client_id = f"{name}-p"
    first = mqtt(client_id, clean=False)
    assert first.connack[:2] == (False, 0)
    assert first.subscribe((f"{name}/p", 1)) == [1]
    first.disconnect()
    pub = mqtt()
    for i in range(3):
        pub.publish(f"{name}/p", f"m{i}".encode(), qos=1)
    second = mqtt(client_id, clean=False)
    assert second.connack[:2] == (True, 0)
    got = [(m.topic, m.payload, m.qos, m.dup) for m in second.wait_messages(3)]
    assert got == [(f"{name}/p", f"m{i}".encode(), 1, False) for i in range(3)]
    second.disconnect()
    clean = mqtt(client_id, clean=True)
    assert clean.connack[:2] == (False, 0)
    clean.disconnect()
    pub.publish(f"{name}/p", b"nobody", qos=1)
    third = mqtt(client_id, clean=False)
    assert third.connack[:2] == (False, 0)
    third.quiet(0)
    third.disconnect()
    mqtt(client_id, clean=True).disconnect()


def test_unacknowledged_qos1_message_comes_again_with_dup_on_resume(raw, mqtt, name):
    client_id = f"{name}-unacked"
    sub = raw_client(raw, client_id, clean=False)
    sub.send(subscribe_packet(1, (f"{name}/d", 1)))
    assert sub.read() == (SUBACK, 0, b"\x00\x01\x01")
    mqtt().publish(f"{name}/d", b"ack me", qos=1)
    kind, flags, body = sub.read()
    assert kind == PUBLISH
    assert parse_publish(flags, body)[:4] == (f"{name}/d", 1, False, False)
    sub.send(packet(DISCONNECT, 0))  # without the PUBACK
    assert sub.packets_until_closed() == []
    again = raw()
    again.send(connect_packet(client_id, clean=False))
    assert again.connack() == (True, 0)
    kind, flags, body = again.read()
    assert kind == PUBLISH
    topic, qos, dup, retain, packet_id, payload = parse_publish(flags, body)
    assert (topic, qos, dup, retain, payload) == (f"{name}/d", 1, True, False, b"ack me")
    again.send(packet(PUBACK, 0, struct.pack(">H", packet_id)))
    again.send(packet(DISCONNECT, 0))
    again.packets_until_closed()
    mqtt(client_id, clean=True).disconnect()


def _declare_ok(conn, queue, **declare):
    """True if this queue.declare is accepted: with `passive=True`, the queue exists; else it
    exists with equivalent settings (or was just made: tests check with passive first). False
    on 404 or 406 (which close the channel)."""
    ch = conn.channel()
    try:
        ch.queue_declare(queue, **declare)
    except pika.exceptions.ChannelClosedByBroker as e:
        assert e.reply_code in (404, 406), e
        return False
    ch.close()
    return True


@amqp
def test_subscription_queues_of_a_persistent_session(connect, mqtt, name):
    """qos1: durable, not auto-delete, x-expires 86400000 (subscription_ttl, 24 h); it outlives
    the connection. qos0: transient and auto-delete, so it goes with the connection."""
    client_id = f"{name}-ps"
    q0, q1 = f"mqtt-subscription-{client_id}qos0", f"mqtt-subscription-{client_id}qos1"
    conn = connect()
    client = mqtt(client_id, clean=False)
    assert client.subscribe((f"{name}/s0", 0), (f"{name}/s1", 1)) == [0, 1]
    assert _declare_ok(conn, q0, passive=True) and _declare_ok(conn, q1, passive=True)
    assert _declare_ok(conn, q1, durable=True, auto_delete=False,
                       arguments={"x-expires": 86400000})
    assert not _declare_ok(conn, q1, durable=False, auto_delete=False,
                           arguments={"x-expires": 86400000})
    assert not _declare_ok(conn, q1, durable=True, auto_delete=False)
    assert _declare_ok(conn, q0, durable=False, auto_delete=True)
    assert not _declare_ok(conn, q0, durable=True, auto_delete=True)
    client.disconnect()
    deadline = time.time() + TIMEOUT
    while _declare_ok(conn, q0, passive=True) and time.time() < deadline:
        time.sleep(0.05)
    assert not _declare_ok(conn, q0, passive=True), "the qos0 queue outlived its connection"
    assert _declare_ok(conn, q1, passive=True)
    mqtt(client_id, clean=True).disconnect()
    assert not _declare_ok(conn, q1, passive=True), "clean_session=1 did not delete the session"


@amqp
def test_subscription_queues_of_a_clean_session(connect, mqtt, name):
    """qos1: durable but auto-delete, no x-expires; qos0 as in a persistent session. Both go
    with the connection."""
    client_id = f"{name}-cs"
    q0, q1 = f"mqtt-subscription-{client_id}qos0", f"mqtt-subscription-{client_id}qos1"
    conn = connect()
    client = mqtt(client_id, clean=True)
    assert client.subscribe((f"{name}/c0", 0), (f"{name}/c1", 1)) == [0, 1]
    assert _declare_ok(conn, q0, passive=True) and _declare_ok(conn, q1, passive=True)
    assert _declare_ok(conn, q1, durable=True, auto_delete=True)
    assert not _declare_ok(conn, q1, durable=True, auto_delete=True,
                           arguments={"x-expires": 86400000})
    assert _declare_ok(conn, q0, durable=False, auto_delete=True)
    client.disconnect()
    deadline = time.time() + TIMEOUT
    while (_declare_ok(conn, q0, passive=True) or _declare_ok(conn, q1, passive=True)) \
            and time.time() < deadline:
        time.sleep(0.05)
    assert not _declare_ok(conn, q0, passive=True)
    assert not _declare_ok(conn, q1, passive=True)


@amqp
def test_amqp_publishes_wait_in_a_persistent_session(connect, mqtt, settle, name):
    client_id = f"{name}-pa"
    first = mqtt(client_id, clean=False)
    assert first.subscribe((f"{name}/pa/#", 1)) == [1]
    first.disconnect()
    ch = connect().channel()
    ch.basic_publish("amq.topic", f"{name}.pa.one", b"while away")
    second = mqtt(client_id, clean=False)
    assert second.session_present
    (m,) = second.wait_messages(1)
    assert (m.topic, m.payload, m.qos) == (f"{name}/pa/one", b"while away", 1)
    second.disconnect()
    mqtt(client_id, clean=True).disconnect()


# --- 7. Will -----------------------------------------------------------------------------------

def test_will_is_published_when_the_connection_drops(mqtt, raw, name):
    watcher = mqtt()
    assert watcher.subscribe((f"{name}/will", 1)) == [1]
    client = raw_client(raw, f"{name}-w", will=(f"{name}/will", b"gone", 1, False))
    client.drop()
    (m,) = watcher.wait_messages(1)
    assert (m.topic, m.payload, m.qos, m.retain) == (f"{name}/will", b"gone", 1, False)
    watcher.quiet(1)


def test_no_will_after_disconnect(mqtt, raw, name):
    watcher = mqtt()
    assert watcher.subscribe((f"{name}/will", 1)) == [1]
    client = raw_client(raw, f"{name}-w", will=(f"{name}/will", b"gone", 1, False))
    client.send(packet(DISCONNECT, 0))
    assert client.packets_until_closed() == []
    watcher.quiet(0, seconds=1)


def test_retained_will(mqtt, raw, name):
    """A will with the retain flag is also retained (on the node of the dropped connection:
    RabbitMQ's retained store is node-local)."""
    client = raw_client(raw, f"{name}-rw", will=(f"{name}/rwill", b"last words", 1, True))
    watcher = mqtt(address=client.address)
    assert watcher.subscribe((f"{name}/rwill", 1)) == [1]
    client.drop()
    (m,) = watcher.wait_messages(1)
    assert (m.payload, m.retain) == (b"last words", False)
    later = mqtt(address=client.address)
    assert later.subscribe((f"{name}/rwill", 1)) == [1]
    (m,) = later.wait_messages(1)
    assert (m.topic, m.payload, m.qos, m.retain) == (f"{name}/rwill", b"last words", 1, True)
    later.publish(f"{name}/rwill", b"", qos=1, retain=True)


# --- 8. Keep-alive -----------------------------------------------------------------------------

def test_keepalive_timeout_closes_and_publishes_the_will(mqtt, raw, name):
    """Keep-alive 1 s: a PINGREQ after 1.3 s gets its PINGRESP; then the server ends the
    silence, not before 1.5 s (MQTT: within 1.5 times the keep-alive; measured from the client,
    so 1.4), and the will goes out. By: 2.6 s for Warren, as RabbitMQ 4.x (a check every 0.75
    times the keep-alive, closing at the second without traffic: 1.5 to 2.25 s); 3.5 s for
    RabbitMQ 3.10 (2 to 3 whole intervals); 6.5 s for mosquitto 2.0 (a coarse timer, 2.7 to
    5.7 s seen)."""
    watcher = mqtt()
    assert watcher.subscribe((f"{name}/ka", 1)) == [1]
    client = raw_client(raw, f"{name}-ka", keepalive=1, will=(f"{name}/ka", b"timed out", 1,
                                                                  False))
    time.sleep(1.3)
    client.send(packet(PINGREQ, 0))
    assert client.read() == (PINGRESP, 0, b"")
    quiet_since = time.time()
    assert client.packets_until_closed(timeout=6) == []
    silent = time.time() - quiet_since
    latest = 6.5 if PLAIN_MQTT else 3.5 if not MQTT5 else 2.6
    print(f"closed after {silent:.2f}s of silence")
    assert 1.4 <= silent <= latest, f"closed after {silent:.2f}s of silence"
    (m,) = watcher.wait_messages(1)
    assert (m.payload, m.qos) == (b"timed out", 1)


# --- 9. MQTT 5 ---------------------------------------------------------------------------------

@mqtt5
def test_v5_session_expiry_interval(mqtt, name):
    client_id = f"{name}-se"
    first = mqtt(client_id, version=5, clean=True,
                 properties=props(PacketTypes.CONNECT, SessionExpiryInterval=1))
    assert first.connack[:2] == (False, 0)
    assert first.subscribe((f"{name}/se", SubscribeOptions(qos=1))) == [1]
    first.disconnect()
    again = mqtt(client_id, version=5, clean=False,
                 properties=props(PacketTypes.CONNECT, SessionExpiryInterval=1))
    assert again.connack[:2] == (True, 0)
    again.disconnect()
    time.sleep(2.5)
    expired = mqtt(client_id, version=5, clean=False)
    assert expired.connack[:2] == (False, 0)
    expired.disconnect()
    # Without the property (0), the session ends with the connection.
    zero = mqtt(client_id, version=5, clean=False)
    assert zero.subscribe((f"{name}/se", SubscribeOptions(qos=1))) == [1]
    zero.disconnect()
    assert mqtt(client_id, version=5, clean=False).connack[:2] == (False, 0)


@mqtt5
def test_v5_message_expiry_interval(mqtt, name):
    client_id = f"{name}-me"
    sub = mqtt(client_id, version=5, clean=True,
               properties=props(PacketTypes.CONNECT, SessionExpiryInterval=60))
    assert sub.subscribe((f"{name}/me", SubscribeOptions(qos=1))) == [1]
    sub.disconnect()
    pub = mqtt(version=5)
    pub.publish(f"{name}/me", b"short", qos=1,
                properties=props(PacketTypes.PUBLISH, MessageExpiryInterval=1))
    pub.publish(f"{name}/me", b"long", qos=1,
                properties=props(PacketTypes.PUBLISH, MessageExpiryInterval=60))
    pub.publish(f"{name}/me", b"forever", qos=1)
    time.sleep(2.1)
    back = mqtt(client_id, version=5, clean=False)
    assert back.session_present
    long_, forever = back.wait_messages(2)
    assert long_.payload == b"long"
    assert 55 <= long_.properties.MessageExpiryInterval <= 58  # what is left of it
    assert forever.payload == b"forever"
    assert not hasattr(forever.properties, "MessageExpiryInterval")
    back.quiet(2)
    back.disconnect()
    mqtt(client_id, version=5, clean=True).disconnect()


@mqtt5
def test_v5_publish_properties_round_trip(mqtt, name):
    """User properties (order and repeated names kept), response topic, correlation data,
    content type and payload format indicator reach the subscriber as sent."""
    sub, pub = mqtt(version=5), mqtt(version=5)
    assert sub.subscribe((f"{name}/props", SubscribeOptions(qos=1))) == [1]
    user = [("b", "2"), ("a", "1"), ("b", "3")]
    pub.publish(f"{name}/props", b"{}", qos=1, properties=props(
        PacketTypes.PUBLISH, UserProperty=user, ResponseTopic=f"{name}/reply",
        CorrelationData=b"\x00\x01corr", ContentType="application/json",
        PayloadFormatIndicator=1))
    (m,) = sub.wait_messages(1)
    p = m.properties
    assert p.UserProperty == user
    assert (p.ResponseTopic, p.CorrelationData, p.ContentType, p.PayloadFormatIndicator) == \
        (f"{name}/reply", b"\x00\x01corr", "application/json", 1)


@mqtt5
def test_v5_topic_alias_from_the_client(mqtt, name):
    pub = mqtt(version=5)
    maximum = getattr(pub.connack[2], "TopicAliasMaximum", 0)
    assert maximum >= 1, f"CONNACK Topic-Alias-Maximum {maximum}"
    sub = mqtt(version=5)
    assert sub.subscribe((f"{name}/alias/#", SubscribeOptions(qos=1))) == [1]
    pub.publish(f"{name}/alias/long/topic", b"sets", qos=1,
                properties=props(PacketTypes.PUBLISH, TopicAlias=1))
    pub.publish("", b"uses", qos=1, properties=props(PacketTypes.PUBLISH, TopicAlias=1))
    pub.publish(f"{name}/alias/other", b"resets", qos=1,
                properties=props(PacketTypes.PUBLISH, TopicAlias=1))
    pub.publish("", b"uses again", qos=1, properties=props(PacketTypes.PUBLISH, TopicAlias=1))
    got = [(m.topic, m.payload) for m in sub.wait_messages(4)]
    assert got == [(f"{name}/alias/long/topic", b"sets"), (f"{name}/alias/long/topic", b"uses"),
                   (f"{name}/alias/other", b"resets"), (f"{name}/alias/other", b"uses again")]


@mqtt5
def test_v5_reason_codes(mqtt, name):
    """PUBACK 0x00 for a QoS 1 publish that found subscribers (mosquitto and RabbitMQ 4 answer
    0x10, no matching subscribers, for one that found none: Warren does not yet, see
    docs/compatibility.md); SUBACK grants QoS 0 and 1; UNSUBACK 0x00, and 0x11 for a filter
    never subscribed."""
    client = mqtt(version=5)
    if PLAIN_MQTT:
        assert client.publish(f"{name}/nobody", b"lost", qos=1) == 0x10
    assert client.subscribe((f"{name}/rc0", SubscribeOptions(qos=0)),
                            (f"{name}/rc1", SubscribeOptions(qos=1))) == [0, 1]
    assert client.publish(f"{name}/rc1", b"found", qos=1) == 0x00
    assert client.unsubscribe(f"{name}/rc1", f"{name}/never") == [0x00, 0x11]


@mqtt5
def test_v5_suback_for_qos2(mqtt, name):
    """RabbitMQ (and a RabbitMQ-compatible broker) grants QoS 1; mosquitto grants 2."""
    client = mqtt(version=5)
    granted = client.subscribe((f"{name}/q2", SubscribeOptions(qos=2)))
    assert granted == ([2] if PLAIN_MQTT else [1])


@mqtt5
def test_v5_no_local(mqtt, name):
    me, other = mqtt(version=5), mqtt(version=5)
    assert me.subscribe((f"{name}/nl", SubscribeOptions(qos=1, noLocal=True)),
                        (f"{name}/l", SubscribeOptions(qos=1, noLocal=False))) == [1, 1]
    assert other.subscribe((f"{name}/nl", SubscribeOptions(qos=1, noLocal=True))) == [1]
    me.publish(f"{name}/nl", b"not to me", qos=1)
    me.publish(f"{name}/l", b"to me", qos=1)
    assert [(m.topic, m.payload) for m in other.wait_messages(1)] == [(f"{name}/nl",
                                                                       b"not to me")]
    assert [(m.topic, m.payload) for m in me.wait_messages(1)] == [(f"{name}/l", b"to me")]
    me.quiet(1)
    other.quiet(1)


@mqtt5
def test_v5_and_v311_clients_exchange_messages(mqtt, name):
    v5, v3 = mqtt(version=5), mqtt(version=4)
    assert v5.subscribe((f"{name}/v5", SubscribeOptions(qos=1))) == [1]
    assert v3.subscribe((f"{name}/v3", 1)) == [1]
    v3.publish(f"{name}/v5", b"from 3.1.1", qos=1)
    v5.publish(f"{name}/v3", b"from 5", qos=1,
               properties=props(PacketTypes.PUBLISH, UserProperty=[("dropped", "in 3.1.1")]))
    assert [(m.payload, m.qos) for m in v5.wait_messages(1)] == [(b"from 3.1.1", 1)]
    assert [(m.payload, m.qos) for m in v3.wait_messages(1)] == [(b"from 5", 1)]


# 5.0 over a bare socket: what paho does not let a test control (its Receive Maximum, a will
# that outlives a dropped connection).

def _u16(n):
    return struct.pack(">H", n)


def _u32(n):
    return struct.pack(">I", n)


def connect5_packet(client_id, clean=True, session_expiry=None, receive_maximum=None,
                    will=None):
    """A 5.0 CONNECT as guest; `will` is (topic, payload, qos, delay in seconds or None)."""
    props = b""
    if session_expiry is not None:
        props += b"\x11" + _u32(session_expiry)
    if receive_maximum is not None:
        props += b"\x21" + _u16(receive_maximum)
    flags, payload = 0xC0 | (0x02 if clean else 0), _str(client_id)
    if will:
        topic, message, qos, delay = will
        flags |= 0x04 | (qos << 3)
        will_props = b"" if delay is None else b"\x18" + _u32(delay)
        payload += _varint(len(will_props)) + will_props + _str(topic) + _str(message)
    payload += _str("guest") + _str("guest")
    header = _str("MQTT") + bytes([5, flags]) + _u16(60) + _varint(len(props)) + props
    return packet(CONNECT, 0, header + payload)


def connack5(conn):
    """(session present, reason code) of the 5.0 CONNACK that must come next."""
    kind, _, body = conn.read()
    assert kind == CONNACK, (kind, body)
    return bool(body[0] & 1), body[1]


def publish5_payload(body):
    """(packet id, payload) of a 5.0 QoS 1 PUBLISH."""
    (length,) = struct.unpack(">H", body[:2])
    rest = body[2 + length:]
    packet_id, rest = struct.unpack(">H", rest[:2])[0], rest[2:]
    props_length, shift, i = 0, 0, 0
    while True:
        props_length |= (rest[i] & 0x7F) << shift
        shift, i = shift + 7, i + 1
        if not rest[i - 1] & 0x80:
            break
    return packet_id, rest[i + props_length:]


@mqtt5
def test_v5_receive_maximum_limits_the_deliveries_awaiting_puback(mqtt, raw, name):
    """A client whose CONNECT says Receive Maximum 2 has at most two QoS 1 PUBLISH
    unacknowledged; each PUBACK lets one more come."""
    client = raw()
    client.send(connect5_packet(f"{name}-rm", receive_maximum=2))
    assert connack5(client) == (False, 0)
    client.send(packet(SUBSCRIBE, 2, _u16(1) + b"\x00" + _str(f"{name}/rm") + b"\x01"))
    kind, _, body = client.read()
    assert (kind, body[:2], body[-1:]) == (SUBACK, _u16(1), b"\x01"), body
    publisher = mqtt(version=5)
    for i in range(5):
        publisher.publish(f"{name}/rm", str(i).encode(), qos=1)
    got = []
    for _ in range(2):
        kind, _, body = client.read()
        assert kind == PUBLISH
        got.append(publish5_payload(body))
    assert [payload for _, payload in got] == [b"0", b"1"]
    assert client.still_open(0.7), "a third PUBLISH before any PUBACK"
    for packet_id, _ in got:
        client.send(packet(PUBACK, 0, _u16(packet_id)))
    rest = []
    for _ in range(3):
        kind, _, body = client.read()
        assert kind == PUBLISH
        packet_id, payload = publish5_payload(body)
        rest.append(payload)
        client.send(packet(PUBACK, 0, _u16(packet_id)))
    assert rest == [b"2", b"3", b"4"]


@mqtt5
def test_v5_subscription_identifiers_come_with_the_deliveries_they_match(mqtt, name):
    """Each delivery carries the identifiers of the subscriptions it matches (one copy with all
    of them for Warren and RabbitMQ; mosquitto may send a copy per subscription, so what is
    compared is the identifiers of every copy); one subscribed again without an identifier
    loses it."""
    sub, pub = mqtt(version=5), mqtt(version=5)
    assert getattr(sub.connack[2], "SubscriptionIdentifierAvailable", 1) == 1
    assert sub.subscribe((f"{name}/si/+", SubscribeOptions(qos=1)),
                         properties=props(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=7)) == [1]
    assert sub.subscribe((f"{name}/si/b", SubscribeOptions(qos=1)),
                         properties=props(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=9)) == [1]
    assert sub.subscribe((f"{name}/si/#", SubscribeOptions(qos=1))) == [1]

    def delivered(topic, payload):
        pub.publish(topic, payload, qos=1)
        time.sleep(0.5)
        with sub.cond:
            copies = [m for m in sub.messages if m.payload == payload]
        assert copies, f"nothing for {topic}"
        if not PLAIN_MQTT:
            assert len(copies) == 1, [m.properties for m in copies]
        return sorted({i for m in copies
                       for i in getattr(m.properties, "SubscriptionIdentifier", [])})

    assert delivered(f"{name}/si/b", b"b") == [7, 9]
    assert delivered(f"{name}/si/c", b"c") == [7]
    assert delivered(f"{name}/si/c/d", b"cd") == []
    assert sub.subscribe((f"{name}/si/b", SubscribeOptions(qos=1))) == [1]
    assert delivered(f"{name}/si/b", b"b again") == [7]


@mqtt5
@rabbitmq
def test_v5_shared_subscriptions_are_not_offered(mqtt, name):
    """CONNACK says Shared Subscription Available 0 and a `$share/` filter gets SUBACK 0x9E, as
    RabbitMQ 3.13 on (mosquitto offers them)."""
    client = mqtt(version=5)
    assert getattr(client.connack[2], "SharedSubscriptionAvailable", None) == 0
    assert client.subscribe((f"$share/g/{name}/s", SubscribeOptions(qos=1)),
                            (f"{name}/s", SubscribeOptions(qos=1))) == [0x9E, 1]


@mqtt5
def test_v5_a_will_with_a_delay_waits_for_it(mqtt, raw, name):
    """A dropped client's will with Will Delay Interval 2 (its session outlives the connection
    by 60 s) goes out after two seconds, not at once."""
    watcher = mqtt(version=5)
    assert watcher.subscribe((f"{name}/wd", SubscribeOptions(qos=1))) == [1]
    client = raw()
    client.send(connect5_packet(f"{name}-wd", clean=True, session_expiry=60,
                                will=(f"{name}/wd", b"late", 1, 2)))
    assert connack5(client) == (False, 0)
    dropped = time.time()
    client.drop()
    watcher.quiet(0, seconds=1.2)
    (m,) = watcher.wait_messages(1, timeout=10)
    waited = time.time() - dropped
    assert (m.topic, m.payload) == (f"{name}/wd", b"late")
    assert 1.2 <= waited <= 8, f"the will came {waited:.1f}s after the drop"
    # The session ends.
    mqtt(f"{name}-wd", version=5, clean=True).disconnect()


@mqtt5
def test_v5_a_client_back_within_its_will_delay_cancels_the_will(mqtt, raw, name):
    watcher = mqtt(version=5)
    assert watcher.subscribe((f"{name}/wc", SubscribeOptions(qos=1))) == [1]
    client = raw()
    client.send(connect5_packet(f"{name}-wc", clean=True, session_expiry=60,
                                will=(f"{name}/wc", b"never", 1, 2)))
    assert connack5(client) == (False, 0)
    client.drop()
    time.sleep(0.3)
    back = mqtt(f"{name}-wc", version=5, clean=False,
                properties=props(PacketTypes.CONNECT, SessionExpiryInterval=60))
    assert back.connack[1] == 0
    watcher.quiet(0, seconds=3.5)
    back.disconnect()
    mqtt(f"{name}-wc", version=5, clean=True).disconnect()


# --- 10. Bad input -----------------------------------------------------------------------------

@pytest.mark.parametrize("garbage", [
    b"GET / HTTP/1.1\r\nHost: mqtt\r\n\r\n" + b"x" * 64,  # first byte: PUBACK with bad flags
    subscribe_packet(1, ("a", 0)),  # a valid packet, but not CONNECT
    publish_packet("a", b"x"),
    packet(PINGREQ, 0),
], ids=["http", "subscribe", "publish", "pingreq"])
def test_anything_but_connect_first_is_closed(raw, mqtt, name, garbage):
    conn = raw()
    conn.send(garbage)
    assert conn.packets_until_closed() == []
    still_serves(mqtt, name)


@pytest.mark.parametrize("level,protocol", [(9, "MQTT"), (3, "MQTT"), (4, "MQIsdp")],
                         ids=["level-9", "level-3-named-MQTT", "level-4-named-MQIsdp"])
def test_unknown_protocol_level_is_refused(raw, mqtt, name, level, protocol):
    """RabbitMQ 3.10 closes without a CONNACK; MQTT 3.1.1 (and mosquitto) send CONNACK 1
    (unacceptable protocol version) first: either way, nothing else."""
    conn = raw()
    conn.send(connect_packet(f"{name}-lvl", level=level, protocol=protocol))
    assert conn.packets_until_closed() in ([], [(CONNACK, 0, b"\x00\x01")])
    still_serves(mqtt, name)


def test_mqtt_3_1_is_accepted(raw, name):
    """Protocol level 3 with the name MQIsdp (MQTT 3.1) is served like 3.1.1."""
    conn = raw()
    conn.send(connect_packet(f"{name}-31", level=3, protocol="MQIsdp"))
    assert conn.connack() == (False, 0)
    conn.send(subscribe_packet(1, (f"{name}/31", 1)))
    assert conn.read() == (SUBACK, 0, b"\x00\x01\x01")


def test_malformed_remaining_length_is_closed(raw, mqtt, name):
    """A fifth length byte: RabbitMQ 3.10 closes at its login timeout (10 s), mosquitto at
    once."""
    conn = raw()
    conn.send(b"\x10\xff\xff\xff\xff\x01")
    assert conn.packets_until_closed(timeout=12) == []
    still_serves(mqtt, name)


@rabbitmq
def test_oversized_packet_before_connect_is_closed(raw, mqtt, name):
    """A CONNECT announcing 256 MB: RabbitMQ 4.x closes past 65536 bytes unauthenticated
    (mqtt.max_packet_size_unauthenticated); 3.10 at its login timeout (10 s). mosquitto waits."""
    conn = raw()
    conn.send(b"\x10\xff\xff\xff\x7f")
    try:
        conn.send(b"\x00" * 200_000)
    except OSError:
        pass  # closed while sending: what the test waits for
    assert conn.packets_until_closed(timeout=12) == []
    still_serves(mqtt, name)


@rabbitmq
def test_connection_without_connect_is_closed_by_the_login_timeout(raw, mqtt, name):
    """A connection that sends nothing is closed after 10 s (RabbitMQ's login_timeout)."""
    conn = raw()
    assert conn.packets_until_closed(timeout=12) == []
    still_serves(mqtt, name)


# --- 11. Several nodes -------------------------------------------------------------------------

def test_subscriber_and_publisher_on_different_nodes(mqtt, name):
    """In a cluster the two clients sit on consecutive nodes (one node: the same)."""
    sub, pub = mqtt(what="subscriber"), mqtt(what="publisher")
    assert sub.subscribe((f"{name}/x/+", 1), (f"{name}/y", 0)) == [1, 0]
    for i in range(5):
        pub.publish(f"{name}/x/{i}", f"m{i}".encode(), qos=1)
    pub.publish(f"{name}/y", b"q0", qos=0)
    got = [(m.topic, m.payload, m.qos) for m in sub.wait_messages(6)]
    # In order within each subscription queue (QoS 1, QoS 0), not across them.
    assert [g for g in got if g[2] == 1] == [(f"{name}/x/{i}", f"m{i}".encode(), 1)
                                             for i in range(5)]
    assert [g for g in got if g[2] == 0] == [(f"{name}/y", b"q0", 0)]
    sub.quiet(6)


def test_persistent_session_resumes_on_another_node(mqtt, mqtt_address, name):
    """Subscribed on one node, messages queued while away, resumed on each other node in turn
    (on one node: the same node each time)."""
    client_id = f"{name}-roam"
    first = mqtt(client_id, clean=False, what="session, first node")
    assert first.subscribe((f"{name}/roam", 1)) == [1]
    first.disconnect()
    pub = mqtt(what="publisher")
    for round_ in range(3):
        pub.publish(f"{name}/roam", f"r{round_}".encode(), qos=1)
        again = mqtt(client_id, clean=False, what=f"session, round {round_}")
        assert again.session_present
        assert [m.payload for m in again.wait_messages(1)] == [f"r{round_}".encode()]
        again.quiet(1, seconds=0.2)
        again.disconnect()
    mqtt(client_id, clean=True).disconnect()


# --- 12. MQTT, STOMP and AMQP together ----------------------------------------------------------

@amqp
@rabbitmq
def test_mqtt_and_stomp_clients_meet_on_amq_topic(mqtt, stomp_address, settle, management_urls,
                                                  name):
    """An MQTT subscriber gets what a STOMP client sends to /topic/<key> and the reverse (both
    protocols are amq.topic: MQTT `a/b` is STOMP `/topic/a.b`), each client on another node; the
    management API lists both with their protocols."""
    received, ready = [], threading.Event()

    class Listener(stomp.ConnectionListener):
        def on_message(self, frame):
            received.append((frame.headers["destination"], frame.body))
            ready.set()

    sub = mqtt()
    assert sub.subscribe((f"{name}/from-stomp", 1)) == [1]
    host, port = stomp_address("STOMP client")
    conn = stomp.Connection12([(host, port)], vhost="/", timeout=TIMEOUT)
    conn.set_listener("", Listener())
    conn.connect("guest", "guest", wait=True)
    try:
        conn.subscribe(f"/topic/{name}.from-mqtt", id="s", ack="auto",
                       headers={"receipt": "subscribed"})
        time.sleep(0.2)
        settle()
        conn.send(f"/topic/{name}.from-stomp", "hello mqtt", headers={"receipt": "sent"})
        (m,) = sub.wait_messages(1)
        assert (m.topic, m.payload, m.qos) == (f"{name}/from-stomp", b"hello mqtt", 1)
        mqtt().publish(f"{name}/from-mqtt", b"hello stomp", qos=1)
        assert ready.wait(TIMEOUT), "the STOMP subscriber got nothing"
        assert received == [(f"/topic/{name}.from-mqtt", "hello stomp")]
        # Both show in the management API (any node's /api/connections lists the cluster's).
        request = urllib.request.Request(f"{management_urls[0]}/api/connections")
        token = base64.b64encode(b"guest:guest").decode()
        request.add_header("Authorization", f"Basic {token}")
        deadline = time.time() + TIMEOUT
        while True:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:
                protocols = {c["protocol"] for c in json.load(answer)}
            if {"MQTT 3.1.1", "STOMP 1.2"} <= protocols or time.time() > deadline:
                break
            time.sleep(0.2)
        assert {"MQTT 3.1.1", "STOMP 1.2"} <= protocols, protocols
    finally:
        conn.disconnect()
