"""Single active consumer (`x-single-active-consumer`), with pika: one consumer receives, the
others wait; when it goes (its connection closes), the next takes over with the messages it had
not acked, in order. On one node and on three (the consumers on different nodes)."""
import time

import pika
import pytest

from helpers import delete_queues


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
def test_one_consumer_receives_and_the_next_takes_over_in_order(connect, name, queue_type):
    publisher = connect()
    ch = publisher.channel()
    ch.confirm_delivery()
    ch.queue_declare(name, durable=True, arguments={
        "x-single-active-consumer": True, "x-queue-type": queue_type})
    got = {"first": [], "second": []}
    conns = {}
    for tag in ["first", "second"]:
        conn = connect()
        cch = conn.channel()
        cch.basic_qos(prefetch_count=10)
        cch.basic_consume(name, lambda _c, m, _p, body, tag=tag: got[tag].append(
            (body.decode(), m.redelivered)), consumer_tag=tag)
        conns[tag] = conn

    def pump(until, who):
        deadline = time.time() + 10
        while not until():
            assert time.time() < deadline, f"timed out: {got}"
            for tag in who:
                conns[tag].process_data_events(time_limit=0.02)

    for i in range(6):
        ch.basic_publish("", name, f"m{i}".encode(), pika.BasicProperties(delivery_mode=2))
    pump(lambda: len(got["first"]) == 6, ["first", "second"])
    # The second waits: nothing comes to it while the first is there.
    deadline = time.time() + 0.3
    while time.time() < deadline:
        conns["second"].process_data_events(time_limit=0.05)
    assert got["second"] == []
    assert [b for b, _ in got["first"]] == [f"m{i}" for i in range(6)]
    # The first goes without acking: the second gets the six again, in order, redelivered.
    conns["first"].close()
    pump(lambda: len(got["second"]) == 6, ["second"])
    assert got["second"] == [(f"m{i}", True) for i in range(6)]
    conns["second"].close()
    delete_queues(publisher, name)


def test_a_non_boolean_single_active_consumer_is_refused(connect, name):
    ch = connect().channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.queue_declare(name, arguments={"x-single-active-consumer": "yes"})
    assert e.value.reply_code == 406
    assert e.value.reply_text == ("PRECONDITION_FAILED - invalid arg 'x-single-active-consumer' "
                                  f"for queue '{name}' in vhost '/': {{unacceptable_type,longstr}}")
