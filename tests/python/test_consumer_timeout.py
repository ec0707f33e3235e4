"""Consumer acknowledgement timeout, with pika (which announces consumer_cancel_notify): a
consumer that keeps a delivery unacked longer than its `x-consumer-timeout` is cancelled by the
broker (`basic.cancel`), its channel stays open and the message goes back to the queue, as
RabbitMQ 4.3 does. On one node and on three."""
import time

import pika
import pytest

from helpers import delete_queues


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
def test_a_consumer_past_its_timeout_is_cancelled_and_its_message_returns(connect, name, queue_type):
    conn = connect()
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare(name, durable=True, arguments={"x-queue-type": queue_type})
    ch.basic_publish("", name, b"slow", pika.BasicProperties(delivery_mode=2))
    got = []
    consumer_conn = connect()
    cch = consumer_conn.channel()
    tag = cch.basic_consume(name, lambda _c, m, _p, body: got.append(body),
                            arguments={"x-consumer-timeout": 1500})
    deadline = time.time() + 15
    while tag in cch.consumer_tags:
        assert time.time() < deadline, "the broker never cancelled the consumer"
        consumer_conn.process_data_events(time_limit=0.1)
    assert got == [b"slow"]
    assert cch.is_open, "the channel stays open"
    method, _props, body = cch.basic_get(name, auto_ack=True)
    assert body == b"slow" and method.redelivered
    delete_queues(conn, name)


def test_a_bad_consumer_timeout_is_refused(connect, name):
    ch = connect().channel()
    ch.queue_declare(name)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.basic_consume(name, lambda *a: None, arguments={"x-consumer-timeout": "soon"})
    assert e.value.reply_code == 406
    assert e.value.reply_text == ("PRECONDITION_FAILED - invalid arg 'x-consumer-timeout' for queue "
                                  f"'{name}' in vhost '/': {{unacceptable_type,longstr}}")
