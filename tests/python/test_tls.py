"""AMQPS as RabbitMQ serves it, through pika and kombu: a Warren node started by this module with
a certificate from `warren cert` (for 127.0.0.1, localhost and ::1), client certificates
verified when presented, SASL EXTERNAL logging in as the certificate's common name, and the
listeners on IPv6 loopback too. The node is this module's own (a TLS listener is a property of
the process), so these tests do not run against a broker started elsewhere (WARREN_TEST_URL)."""
import os
import shutil
import ssl
import subprocess
import tempfile
import time
from pathlib import Path

import kombu
import pika
import pytest

from conftest import Node, _free_ports, stop_nodes, warren_binary

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("WARREN_TEST_URL")),
    reason="starts its own Warren node with TLS listeners (not possible against WARREN_TEST_URL)")


def cert(binary, *args):
    subprocess.run([str(binary), "cert", *args], check=True, capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def tls_node():
    """A node on ::1 with AMQP and AMQPS (client certificates optional), whose default user is
    `app`; and the certificates: CA, the server's, `app`'s and an unknown user's."""
    binary = warren_binary()
    workdir = Path(tempfile.mkdtemp(prefix="warren-py-tls-"))
    ca = workdir / "ca"
    cert(binary, "create-ca", "--certs-dir", str(ca))
    signed = ["--ca-cert", str(ca / "ca.crt"), "--ca-key", str(ca / "ca.key")]
    cert(binary, "create-node", "1", "--host", "127.0.0.1", "--host", "localhost", "--host", "::1",
         "--certs-dir", str(workdir / "server"), *signed)
    for user in ("app", "ghost"):
        cert(binary, "create-client", user, "--amqp-only", "--certs-dir", str(workdir / user),
             *signed)
    amqp, amqps = _free_ports(2)
    server = workdir / "server"
    flags = ["--tls-cert", str(server / "node.crt"), "--tls-key", str(server / "node.key"),
             "--tls-ca", str(ca / "ca.crt"), "--amqps-port", str(amqps),
             "--default-user", "app", "--default-pass", "app-password", "--loopback-users", ""]
    node = Node(binary, workdir, 1, amqp, None, flags, bind="::1")
    try:
        assert node.listening(time.time() + 30), node.log()
        yield {"node": node, "amqps": amqps, "dir": workdir}
    finally:
        stop_nodes([node])
        shutil.rmtree(workdir, ignore_errors=True)


def context(dirs, client=None):
    ctx = ssl.create_default_context(cafile=str(dirs / "ca" / "ca.crt"))
    if client:
        ctx.load_cert_chain(str(dirs / client / "client.crt"), str(dirs / client / "client.key"))
    return ctx


def round_trip(conn, queue):
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare(queue, auto_delete=True)
    ch.basic_publish("", queue, b"over tls")
    _, _, body = ch.basic_get(queue, auto_ack=True)
    assert body == b"over tls"


def test_pika_over_amqps_with_plain(tls_node):
    d = tls_node["dir"]
    # The server's certificate names ::1: verified against the address itself.
    params = pika.ConnectionParameters(
        "::1", tls_node["amqps"], ssl_options=pika.SSLOptions(context(d), "::1"),
        credentials=pika.PlainCredentials("app", "app-password"))
    conn = pika.BlockingConnection(params)
    try:
        round_trip(conn, "pika-plain")
    finally:
        conn.close()


def test_pika_external_logs_in_as_the_certificates_common_name(tls_node):
    d = tls_node["dir"]
    params = pika.ConnectionParameters(
        "::1", tls_node["amqps"], ssl_options=pika.SSLOptions(context(d, "app"), "localhost"),
        credentials=pika.credentials.ExternalCredentials())
    conn = pika.BlockingConnection(params)
    try:
        round_trip(conn, "pika-external")
    finally:
        conn.close()
    # A certificate of the CA for a user that does not exist is refused as RabbitMQ refuses.
    params = pika.ConnectionParameters(
        "::1", tls_node["amqps"], ssl_options=pika.SSLOptions(context(d, "ghost"), "localhost"),
        credentials=pika.credentials.ExternalCredentials(), connection_attempts=1)
    with pytest.raises(pika.exceptions.ProbableAuthenticationError) as refused:
        pika.BlockingConnection(params)
    assert "Login was refused using authentication mechanism EXTERNAL" in str(refused.value)


def test_kombu_over_amqps_with_external(tls_node):
    d = tls_node["dir"]
    ssl_options = {"ca_certs": str(d / "ca" / "ca.crt"),
                   "certfile": str(d / "app" / "client.crt"),
                   "keyfile": str(d / "app" / "client.key"),
                   "cert_reqs": ssl.CERT_REQUIRED,
                   "server_hostname": "localhost"}
    with kombu.Connection(f"amqp://[::1]:{tls_node['amqps']}//", ssl=ssl_options,
                          login_method="EXTERNAL", connect_timeout=10) as conn:
        queue = kombu.Queue("kombu-external", auto_delete=True)
        with conn.Producer() as producer:
            producer.publish({"hello": "tls"}, routing_key="kombu-external", declare=[queue],
                             serializer="json")
        with conn.SimpleQueue(queue) as q:
            message = q.get(timeout=10)
            assert message.payload == {"hello": "tls"}
            message.ack()


def test_plain_amqp_on_ipv6_loopback(tls_node):
    conn = pika.BlockingConnection(pika.URLParameters(
        tls_node["node"].url.replace("guest:guest", "app:app-password")))
    try:
        round_trip(conn, "ipv6-plain")
    finally:
        conn.close()
