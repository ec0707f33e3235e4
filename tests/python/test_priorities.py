"""Priority queues (`x-max-priority`) with pika, as RabbitMQ's classic priority queues behave:
the highest priority first, FIFO within a priority, a priority above the maximum counts as the
maximum, a requeued message goes back to its place within its priority, and arguments out of
range are refused with RabbitMQ's code and text. On one node and on three (the connections
spread over the nodes)."""
import time

import pika
import pytest

from helpers import delete_queues

KINDS = {
    "quorum": dict(durable=True, arguments={"x-queue-type": "quorum"}),
    "classic-durable": dict(durable=True, arguments={}),
    "transient": dict(durable=False, auto_delete=True, arguments={}),
}


def get_all(ch, queue):
    """(body, redelivered) of every ready message, taken with basic.get and acked."""
    got = []
    while True:
        method, _props, body = ch.basic_get(queue, auto_ack=True)
        if method is None:
            return got
        got.append((body.decode(), method.redelivered))


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_highest_priority_first_fifo_within_a_priority(connect, name, kind):
    spec = KINDS[kind]
    publisher = connect()
    ch = publisher.channel()
    ch.confirm_delivery()
    ch.queue_declare(name, durable=spec["durable"], auto_delete=spec.get("auto_delete", False),
                     arguments={"x-max-priority": 5, **spec["arguments"]})
    sent = [("none-1", None), ("p1-1", 1), ("p5-1", 5), ("p9-1", 9), ("p0-1", 0),
            ("p1-2", 1), ("none-2", None), ("p5-2", 5)]
    for body, priority in sent:
        ch.basic_publish("", name, body.encode(), pika.BasicProperties(priority=priority, delivery_mode=2))
    # A consumer holding the two highest, then giving them back (nack, requeue).
    if kind == "transient":
        consumer_ch = publisher.channel()  # a transient queue lives with its declaring connection
    else:
        consumer_ch = connect().channel()
    first = [consumer_ch.basic_get(name, auto_ack=False) for _ in range(2)]
    assert [body.decode() for _m, _p, body in first] == ["p5-1", "p9-1"]
    consumer_ch.basic_nack(first[1][0].delivery_tag, multiple=True, requeue=True)
    got = get_all(consumer_ch, name)
    assert [b for b, _ in got] == ["p5-1", "p9-1", "p5-2", "p1-1", "p1-2",
                                   "none-1", "p0-1", "none-2"]
    assert [r for _, r in got[:2]] == [True, True]
    assert not any(r for _, r in got[2:])
    delete_queues(publisher, name)


def test_a_consumer_with_prefetch_gets_the_backlog_by_priority(connect, name):
    conn = connect()
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare(name, durable=True, arguments={"x-max-priority": 10})
    for i in range(30):
        ch.basic_publish("", name, f"{i % 3}-{i:02}".encode(),
                         pika.BasicProperties(priority=i % 3, delivery_mode=2))
    cch = connect().channel()
    cch.basic_qos(prefetch_count=1)
    seen = []
    for method, _props, body in cch.consume(name, inactivity_timeout=5):
        if method is None:
            break
        seen.append(body.decode())
        cch.basic_ack(method.delivery_tag)
        if len(seen) == 30:
            break
    cch.cancel()
    expected = sorted((f"{i % 3}-{i:02}" for i in range(30)), key=lambda b: (-int(b[0]), b))
    assert seen == expected
    delete_queues(conn, name)


@pytest.mark.parametrize("value,code,text", [
    (300, 406, "PRECONDITION_FAILED - invalid arg 'x-max-priority' for queue 'QUEUE' in vhost '/': "
               "{max_value_exceeded,300}"),
    (-1, 406, "PRECONDITION_FAILED - invalid arg 'x-max-priority' for queue 'QUEUE' in vhost '/': "
              "{value_negative,-1}"),
    ("ten", 406, "PRECONDITION_FAILED - invalid arg 'x-max-priority' for queue 'QUEUE' in vhost '/': "
                 "{unacceptable_type,longstr}"),
])
def test_max_priority_out_of_range_is_refused_as_rabbitmq_refuses_it(connect, name, value, code, text):
    ch = connect().channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.queue_declare(name, durable=True, arguments={"x-max-priority": value})
    assert e.value.reply_code == code
    assert e.value.reply_text == text.replace("QUEUE", name)
    # Nothing was declared.
    ch = connect().channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.queue_declare(name, passive=True)
    assert e.value.reply_code == 404


def test_the_highest_priority_consumer_with_room_gets_the_messages(connect, name):
    """Consumer priorities (`x-priority` on basic.consume): with room in its prefetch window the
    high-priority consumer gets every message; once it is full, the lower one gets them."""
    publisher = connect()
    assert publisher._impl.server_capabilities.get("consumer_priorities") is True
    ch = publisher.channel()
    ch.confirm_delivery()
    ch.queue_declare(name, durable=True)
    got = {"high": [], "low": []}
    consumers = []
    for tag, priority in [("low", None), ("high", 10)]:
        conn = connect()
        cch = conn.channel()
        cch.basic_qos(prefetch_count=5)
        arguments = {} if priority is None else {"x-priority": priority}
        cch.basic_consume(name, lambda _c, m, _p, body, tag=tag: got[tag].append(body.decode()),
                          consumer_tag=tag, arguments=arguments)
        consumers.append(conn)

    def pump(until):
        deadline = time.time() + 10
        while not until():
            assert time.time() < deadline, f"timed out: {got}"
            for conn in consumers:
                conn.process_data_events(time_limit=0.02)

    for i in range(5):
        ch.basic_publish("", name, f"m{i}".encode())
    pump(lambda: len(got["high"]) == 5)
    for i in range(5, 8):
        ch.basic_publish("", name, f"m{i}".encode())
    pump(lambda: len(got["low"]) == 3)
    assert got == {"high": [f"m{i}" for i in range(5)], "low": ["m5", "m6", "m7"]}
    for conn in consumers:
        conn.close()
    delete_queues(publisher, name)
