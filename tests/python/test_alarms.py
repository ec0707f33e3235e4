"""A memory alarm seen through pika: a node started with a memory high watermark below what it
uses has its alarm on from the start; pika's publisher gets `connection.blocked` with
RabbitMQ's reason at its first publish and is not read any more, while a consumer's connection
goes on. (Unblocking, and alarms across nodes: tests/tests/alarms.rs.) The node is this
module's own, so these tests do not run against a broker started elsewhere (WARREN_TEST_URL)."""
import os
import shutil
import tempfile
import time
from pathlib import Path

import pika
import pytest

from conftest import Node, _free_ports, stop_nodes, warren_binary

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("WARREN_TEST_URL")),
    reason="starts its own Warren node with a memory alarm (not possible against WARREN_TEST_URL)")


@pytest.fixture(scope="module")
def alarmed_node():
    workdir = Path(tempfile.mkdtemp(prefix="warren-py-alarm-"))
    (port,) = _free_ports(1)
    node = Node(warren_binary(), workdir, 1, port, None,
                ["--vm-memory-high-watermark-absolute", "1MB"])
    try:
        assert node.listening(time.time() + 30), node.log()
        yield node
    finally:
        stop_nodes([node])
        shutil.rmtree(workdir, ignore_errors=True)


def test_pika_is_blocked_with_rabbitmqs_reason_and_consumers_go_on(alarmed_node):
    blocked = []
    conn = pika.BlockingConnection(pika.URLParameters(alarmed_node.url))
    conn.add_on_connection_blocked_callback(lambda _c, m: blocked.append(m.method.reason))
    ch = conn.channel()
    ch.queue_declare("alarmed", auto_delete=False)
    # Methods other than publish go on under the alarm.
    assert ch.queue_declare("alarmed", passive=True).method.message_count == 0
    ch.basic_publish("", "alarmed", b"held")
    deadline = time.time() + 10
    while not blocked and time.time() < deadline:
        conn.process_data_events(time_limit=0.2)
    assert blocked == ["low on memory"]
    # A consumer's connection is not blocked: it declares, gets (nothing was taken), closes.
    other = pika.BlockingConnection(pika.URLParameters(alarmed_node.url))
    try:
        och = other.channel()
        method, _, _ = och.basic_get("alarmed", auto_ack=True)
        assert method is None, "the held publish was not taken"
    finally:
        other.close()
    assert "memory resource limit alarm set" in alarmed_node.log()
