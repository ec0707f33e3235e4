"""Poison messages in quorum queues, with pika: each redelivery of a message given back
(nack/reject with requeue) carries `x-delivery-count`; past `x-delivery-limit` returns the
message is dead-lettered with reason `delivery_limit`, or dropped without a dead-letter
exchange; a quorum queue's default limit is 20 (RabbitMQ 4.0). On one node and on three."""
import pika
import pytest

from helpers import delete_queues


def get_and_nack(ch, queue):
    """Takes the message (unacked), gives it back; returns its x-delivery-count (None without)."""
    method, props, _body = ch.basic_get(queue, auto_ack=False)
    assert method is not None, f"a message in {queue}"
    ch.basic_nack(method.delivery_tag, requeue=True)
    return (props.headers or {}).get("x-delivery-count")


def test_past_the_delivery_limit_a_message_is_dead_lettered(connect, name):
    conn = connect()
    ch = conn.channel()
    ch.confirm_delivery()
    dlq = name + "-dlq"
    ch.queue_declare(dlq, durable=True)
    ch.queue_declare(name, durable=True, arguments={
        "x-queue-type": "quorum", "x-delivery-limit": 2,
        "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq})
    ch.basic_publish("", name, b"poison", pika.BasicProperties(delivery_mode=2))
    worker = connect().channel()
    assert [get_and_nack(worker, name) for _ in range(3)] == [None, 1, 2]
    # The third return passed the limit: the message waits in the dead-letter queue.
    for _ in range(100):
        method, props, body = worker.basic_get(dlq, auto_ack=True)
        if method is not None:
            break
        conn.sleep(0.05)
    assert body == b"poison"
    assert props.headers["x-first-death-reason"] == "delivery_limit"
    assert worker.queue_declare(name, passive=True).method.message_count == 0
    delete_queues(conn, name, dlq)


def test_a_quorum_queue_drops_a_message_after_20_returns_by_default(connect, name):
    conn = connect()
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare(name, durable=True, arguments={"x-queue-type": "quorum"})
    ch.basic_publish("", name, b"poison", pika.BasicProperties(delivery_mode=2))
    counts = [get_and_nack(ch, name) for _ in range(21)]
    assert counts == [None] + list(range(1, 21))
    for _ in range(100):
        if ch.queue_declare(name, passive=True).method.message_count == 0:
            break
        conn.sleep(0.05)
    assert ch.queue_declare(name, passive=True).method.message_count == 0
    delete_queues(conn, name)


@pytest.mark.parametrize("value,text", [
    (-1, "{value_negative,-1}"),
    ("many", "{unacceptable_type,longstr}"),
])
def test_a_bad_delivery_limit_is_refused(connect, name, value, text):
    ch = connect().channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.queue_declare(name, durable=True,
                         arguments={"x-queue-type": "quorum", "x-delivery-limit": value})
    assert e.value.reply_code == 406
    assert e.value.reply_text == (f"PRECONDITION_FAILED - invalid arg 'x-delivery-limit' for queue "
                                  f"'{name}' in vhost '/': {text}")
