"""The seed documents' programs, run unchanged (see seeds/README.md) against the broker."""
import collections

import pika
import pytest


def purge(amqp_url, queue):
    """Empties a queue left by an earlier run against the same broker, if it exists."""
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        conn.channel().queue_purge(queue)
    except pika.exceptions.ChannelClosedByBroker as e:
        assert e.reply_code == 404
    conn.close()


def delete_queues(amqp_url, *queues):
    """Removes queues (and so their bindings) left by an earlier run against the same broker."""
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    ch = conn.channel()
    for q in queues:
        ch.queue_delete(q)
    conn.close()


def test_order_notify_and_report(program, legacy_python, amqp_url):
    delete_queues(amqp_url, "order_notify", "order_report")
    # The blog publishes first and notes the messages go nowhere: no queue is bound yet. Then it
    # starts the consumers and publishes again.
    publisher = program("pika_blog/publish.py", legacy_python)
    assert publisher.finish() == 0, "".join(publisher.lines)
    notify = program("pika_blog/notify.py", legacy_python)
    report = program("pika_blog/report.py", legacy_python)
    notify.wait_for("Waiting for notify messages")
    report.wait_for("Waiting for report messages")
    publisher = program("pika_blog/publish.py", legacy_python)
    assert publisher.finish() == 0, "".join(publisher.lines)
    assert publisher.lines == [" [x] Sent notify message\n", " [x] Sent report message\n"]
    notify.wait_for("Notifying john.doe@example.com")
    notify.wait_for("[x] Done")
    report.wait_for("Product: Leather Jacket")
    report.wait_for("User Email: john.doe@example.com")
    # The first run's messages were unroutable: each consumer saw exactly one order.
    notify.stop()
    report.stop()
    assert sum("Notifying" in l for l in notify.lines) == 1
    assert sum("Generating report" in l for l in report.lines) == 1


def test_kombu_number_squares_with_competing_consumers(program, amqp_url):
    purge(amqp_url, "number")
    # Declare the queue before the consumers start so that both attach before the burst.
    producer = program("summercamp/number_producer.py")
    assert producer.finish() == 0, "".join(producer.lines)
    purge(amqp_url, "number")
    consumers = [program("summercamp/number_consumer.py") for _ in range(2)]
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    ch = conn.channel()
    import time

    deadline = time.time() + 20
    while ch.queue_declare("number", durable=True, passive=True).method.consumer_count < 2:
        assert time.time() < deadline, "consumers did not attach"
        time.sleep(0.1)
    producer = program("summercamp/number_producer.py")
    assert producer.finish() == 0, "".join(producer.lines)
    deadline = time.time() + 30
    while True:
        for c in consumers:
            c.proc.poll()
        q = ch.queue_declare("number", durable=True, passive=True).method
        if q.message_count == 0:
            break
        assert time.time() < deadline, f"{q.message_count} numbers never consumed"
        time.sleep(0.2)
    conn.close()
    time.sleep(0.5)
    for c in consumers:
        c.stop()
    squares = [collections.Counter(int(l) for l in c.lines if l.strip().isdigit()) for c in consumers]
    total = squares[0] + squares[1]
    assert total == collections.Counter(i * i for i in range(1000)), "every number squared exactly once"
    assert all(len(s) > 100 for s in squares), f"work is shared: {[sum(s.values()) for s in squares]}"
