"""STOMP, MQTT, Web-STOMP and Web-MQTT over TLS, with real clients checking the node's
certificate against the cluster's CA (as RabbitMQ's stomp.ssl, mqtt.ssl, web_stomp.ssl and
web_mqtt.ssl listeners): stomp.py with `set_ssl`, paho-mqtt with `tls_set` over TCP and over
WebSocket, and websocket-client for STOMP over `wss://` (stomp.py has no WebSocket transport;
the STOMP frames are written here). Each message is published over AMQPS with pika and must
arrive through the TLS listener under test, and the reverse.

The module starts its own node (its certificate from `warren cert`, every TLS listener on a free
port), whatever broker the session tests: run against an external broker (WARREN_TEST_URL) it is
skipped, since the TLS ports of that broker are not known.
"""
import os
import queue
import shutil
import socket
import ssl
import tempfile
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as paho
import pika
import pytest
import stomp
import websocket
from paho.mqtt.enums import CallbackAPIVersion

import conftest

TIMEOUT = 15

pytestmark = pytest.mark.skipif(bool(os.environ.get("WARREN_TEST_URL")),
                                reason="starts its own node with TLS listeners; an external "
                                "broker's TLS ports are not known (WARREN_TEST_URL)")

LISTENERS = ("amqps", "stomp_tls", "mqtt_tls", "web_stomp_tls", "web_mqtt_tls")


@pytest.fixture(scope="module")
def tls_node():
    """One node with AMQPS, STOMP/TLS, MQTT/TLS, Web-STOMP/TLS and Web-MQTT/TLS; yields
    (node, {listener: port}, CA file)."""
    binary = conftest.warren_binary()
    workdir = tempfile.mkdtemp(prefix="warren-py-tls-")
    node = None
    try:
        for _ in range(conftest.START_ATTEMPTS):
            certs = conftest.make_certs(binary, Path(workdir) / f"certs-{uuid.uuid4().hex[:6]}",
                                        1)
            amqp, *tls_ports = conftest._free_ports(1 + len(LISTENERS))
            ports = dict(zip(LISTENERS, tls_ports))
            own = certs / "node1"
            flags = ["--tls-cert", str(own / "node.crt"), "--tls-key", str(own / "node.key"),
                     "--amqps-port", str(ports["amqps"]),
                     "--stomp-tls-port", str(ports["stomp_tls"]),
                     "--mqtt-tls-port", str(ports["mqtt_tls"]),
                     "--web-stomp-tls-port", str(ports["web_stomp_tls"]),
                     "--web-mqtt-tls-port", str(ports["web_mqtt_tls"]),
                     "--web-stomp-port", "0", "--web-mqtt-port", "0",
                     "--management-tls-port", "0"]
            node = conftest.Node(binary, workdir, 1, amqp, None, flags)
            if node.listening(time.time() + conftest.START_TIMEOUT):
                break
            node.terminate()
            node.wait()
            node = None
        assert node is not None, "the TLS node did not start"
        yield node, ports, str(certs / "ca" / "ca.crt")
    finally:
        if node is not None:
            node.terminate()
            node.wait()
        shutil.rmtree(workdir, ignore_errors=True)


def amqps(tls_node):
    """A pika connection over AMQPS, checking the node's certificate."""
    _, ports, ca = tls_node
    context = ssl.create_default_context(cafile=ca)
    params = pika.ConnectionParameters(
        host="127.0.0.1", port=ports["amqps"], credentials=pika.PlainCredentials("guest", "guest"),
        ssl_options=pika.SSLOptions(context, server_hostname="127.0.0.1"))
    return pika.BlockingConnection(params)


def publish_amqps(tls_node, routing_key, body, exchange=""):
    conn = amqps(tls_node)
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.basic_publish(exchange, routing_key, body)
    finally:
        conn.close()


def get_amqps(tls_node, queue_name):
    """The next message of a queue over AMQPS (waiting for it), as bytes."""
    conn = amqps(tls_node)
    try:
        ch = conn.channel()
        deadline = time.time() + TIMEOUT
        while time.time() < deadline:
            _, _, body = ch.basic_get(queue_name, auto_ack=True)
            if body is not None:
                return body
            time.sleep(0.05)
        raise AssertionError(f"nothing in {queue_name} within {TIMEOUT}s")
    finally:
        conn.close()


def test_the_tls_listeners_present_the_nodes_certificate_and_refuse_plaintext(tls_node):
    _, ports, ca = tls_node
    context = ssl.create_default_context(cafile=ca)
    for listener in ("stomp_tls", "mqtt_tls", "web_stomp_tls", "web_mqtt_tls"):
        with socket.create_connection(("127.0.0.1", ports[listener]), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                subject = dict(x[0] for x in tls.getpeercert()["subject"])
                assert subject.get("commonName"), (listener, tls.getpeercert())
        # Plaintext bytes on a TLS port get no protocol answer: the handshake fails.
        with socket.create_connection(("127.0.0.1", ports[listener]), timeout=5) as raw:
            raw.sendall(b"CONNECT\naccept-version:1.2\n\n\x00")
            raw.settimeout(5)
            try:
                answer = raw.recv(64)
            except (ConnectionResetError, TimeoutError, socket.timeout):
                answer = b""
            assert not answer.startswith(b"CONNECTED"), (listener, answer)


def test_stomp_over_tls_sends_and_receives_with_stomp_py(tls_node):
    _, ports, ca = tls_node
    name = f"tls-stomp-{uuid.uuid4().hex[:8]}"
    received = queue.Queue()

    class Listener(stomp.ConnectionListener):
        def on_message(self, frame):
            received.put(frame.body)

    conn = stomp.Connection12([("127.0.0.1", ports["stomp_tls"])], heartbeats=(0, 0), vhost="/")
    conn.set_ssl([("127.0.0.1", ports["stomp_tls"])], ca_certs=ca)
    conn.set_listener("l", Listener())
    conn.connect("guest", "guest", wait=True)
    try:
        conn.subscribe(f"/queue/{name}", id=1, ack="auto", headers={"receipt": "sub"})
        time.sleep(0.3)
        publish_amqps(tls_node, name, b"over amqps")
        assert received.get(timeout=TIMEOUT) == "over amqps"
        conn.send(f"/queue/{name}-back", "over stomp/ssl", headers={"persistent": "true"})
        assert get_amqps(tls_node, f"{name}-back") == b"over stomp/ssl"
    finally:
        conn.disconnect()


def paho_client(ports, ca, listener, client_id):
    """A paho client connected over TLS (MQTT over TCP, or over WebSocket at /ws), started."""
    websockets = listener == "web_mqtt_tls"
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                    transport="websockets" if websockets else "tcp",
                    protocol=paho.MQTTv311, reconnect_on_failure=False)
    if websockets:
        c.ws_set_options(path="/ws")
    c.tls_set(ca_certs=ca)
    c.username_pw_set("guest", "guest")
    connected = threading.Event()
    c.on_connect = lambda *_: connected.set()
    c.connect("127.0.0.1", ports[listener], 60)
    c.loop_start()
    assert connected.wait(TIMEOUT), f"no CONNACK over {listener}"
    return c


@pytest.mark.parametrize("listener", ["mqtt_tls", "web_mqtt_tls"])
def test_mqtt_over_tls_publishes_and_subscribes_with_paho(tls_node, listener):
    _, ports, ca = tls_node
    topic_id = uuid.uuid4().hex[:8]
    received = queue.Queue()
    c = paho_client(ports, ca, listener, f"tls-{topic_id}")
    try:
        c.on_message = lambda _c, _u, m: received.put((m.topic, m.payload))
        subscribed = threading.Event()
        c.on_subscribe = lambda *_: subscribed.set()
        c.subscribe(f"tls/{topic_id}/+", qos=1)
        assert subscribed.wait(TIMEOUT), "no SUBACK"
        publish_amqps(tls_node, f"tls.{topic_id}.amqp", b"from amqps", exchange="amq.topic")
        assert received.get(timeout=TIMEOUT) == (f"tls/{topic_id}/amqp", b"from amqps")
        info = c.publish(f"tls/{topic_id}/mqtt", b"from mqtt", qos=1)
        info.wait_for_publish(TIMEOUT)
        assert info.is_published(), "no PUBACK"
        assert received.get(timeout=TIMEOUT) == (f"tls/{topic_id}/mqtt", b"from mqtt")
    finally:
        c.disconnect()
        c.loop_stop()


def stomp_frame(command, headers=(), body=b""):
    head = "".join(f"{k}:{v}\n" for k, v in headers)
    return f"{command}\n{head}\n".encode() + body + b"\x00"


def test_web_stomp_over_wss_sends_and_receives(tls_node):
    _, ports, ca = tls_node
    name = f"tls-wss-{uuid.uuid4().hex[:8]}"
    ws = websocket.create_connection(f"wss://127.0.0.1:{ports['web_stomp_tls']}/ws",
                                     subprotocols=["v12.stomp"], sslopt={"ca_certs": ca},
                                     timeout=TIMEOUT)
    try:
        assert ws.subprotocol == "v12.stomp"
        ws.send(stomp_frame("CONNECT", [("accept-version", "1.2"), ("host", "/"),
                                        ("login", "guest"), ("passcode", "guest"),
                                        ("heart-beat", "0,0")]))
        assert ws.recv().startswith("CONNECTED")
        ws.send(stomp_frame("SUBSCRIBE", [("id", "0"), ("destination", f"/queue/{name}"),
                                          ("receipt", "sub")]))
        assert "receipt-id:sub" in ws.recv()
        publish_amqps(tls_node, name, b"over amqps")
        command, rest = ws.recv().split("\n", 1)
        assert command == "MESSAGE", rest
        assert rest.split("\n\n", 1)[1].split("\x00")[0] == "over amqps", rest
        ws.send(stomp_frame("SEND", [("destination", f"/queue/{name}-back"),
                                     ("receipt", "sent")], b"over wss"))
        assert "receipt-id:sent" in ws.recv()
        assert get_amqps(tls_node, f"{name}-back") == b"over wss"
    finally:
        ws.close()
