"""Streams over AMQP 0-9-1 (`x-queue-type: stream`), with pika, as RabbitMQ 3.9+ serves them:
an append-only log that consumers read without removing, each from its own `x-stream-offset`,
with a prefetch and acks; each delivery carries its `x-stream-offset`; retention by
`x-max-length-bytes`. On one node and on three."""
import datetime
import time

import pika
import pytest

from helpers import delete_queues


def read(conn, ch, queue, offset, count, prefetch=5):
    """(offset, body) of `count` deliveries from `offset`, each acked."""
    ch.basic_qos(prefetch_count=prefetch)
    got = []

    def on_message(c, method, props, body):
        got.append((props.headers["x-stream-offset"], body.decode()))
        c.basic_ack(method.delivery_tag)

    tag = ch.basic_consume(queue, on_message, arguments={"x-stream-offset": offset})
    deadline = time.time() + 10
    while len(got) < count:
        assert time.time() < deadline, f"timed out with {got}"
        conn.process_data_events(time_limit=0.05)
    ch.basic_cancel(tag)
    return got


def test_consumers_read_a_stream_from_their_own_offsets_and_nothing_is_removed(connect, name):
    conn = connect()
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare(name, durable=True, arguments={"x-queue-type": "stream"})
    for i in range(10):
        ch.basic_publish("", name, f"m{i}".encode(), pika.BasicProperties(delivery_mode=2))
    reader = connect()
    assert read(reader, reader.channel(), name, "first", 10) == [(i, f"m{i}") for i in range(10)]
    assert read(reader, reader.channel(), name, 7, 3) == [(i, f"m{i}") for i in range(7, 10)]
    # A timestamp before the first message reads from the start.
    since = datetime.datetime.now() - datetime.timedelta(hours=1)
    assert read(reader, reader.channel(), name, since, 10)[0] == (0, "m0")
    # "next": only what comes after it subscribed.
    nch = reader.channel()
    nch.basic_qos(prefetch_count=5)
    fresh = []
    nch.basic_consume(name, lambda c, m, p, b: (fresh.append(b), c.basic_ack(m.delivery_tag)),
                      arguments={"x-stream-offset": "next"})
    reader.process_data_events(time_limit=0.3)
    ch.basic_publish("", name, b"m10", pika.BasicProperties(delivery_mode=2))
    deadline = time.time() + 10
    while not fresh:
        assert time.time() < deadline
        reader.process_data_events(time_limit=0.05)
    assert fresh == [b"m10"]
    # Reading removed nothing.
    assert ch.queue_declare(name, passive=True).method.message_count == 11
    delete_queues(conn, name)


def test_a_stream_refuses_basic_get_no_ack_and_a_missing_prefetch(connect, name):
    conn = connect()
    ch = conn.channel()
    ch.queue_declare(name, durable=True, arguments={"x-queue-type": "stream"})
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.basic_get(name)
    assert e.value.reply_code == 406
    ch = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.basic_consume(name, lambda *a: None)
        conn.process_data_events(time_limit=0.5)
    assert e.value.reply_code == 406
    assert "consumer prefetch count is not set" in e.value.reply_text
    ch = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.queue_declare(name + "-t", durable=False, arguments={"x-queue-type": "stream"})
    assert e.value.reply_code == 406
    delete_queues(conn, name)


def test_retention_by_size_drops_the_oldest(connect, name):
    conn = connect()
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare(name, durable=True, arguments={
        "x-queue-type": "stream", "x-max-length-bytes": 30})
    for i in range(10):
        ch.basic_publish("", name, f"{i:05}".encode(), pika.BasicProperties(delivery_mode=2))
    assert ch.queue_declare(name, passive=True).method.message_count == 6
    reader = connect()
    got = read(reader, reader.channel(), name, "first", 6)
    assert got == [(i, f"{i:05}") for i in range(4, 10)]
    delete_queues(conn, name)
