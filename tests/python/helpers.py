"""Small helpers shared by the tests (plain functions; fixtures live in conftest.py)."""
import time

import pika


def wait_until(predicate, timeout=10, interval=0.05, what="condition"):
    """Polls `predicate` until it returns a truthy value (returned), failing after `timeout` s."""
    deadline = time.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def queue_counts(conn, queue):
    """(message_count, consumer_count) of `queue` from a passive declare, or None if it does not
    exist. Uses a channel of its own, since a 404 closes the channel."""
    ch = conn.channel()
    try:
        ok = ch.queue_declare(queue, passive=True)
    except pika.exceptions.ChannelClosedByBroker as e:
        assert e.reply_code == 404, e
        return None
    ch.close()
    return ok.method.message_count, ok.method.consumer_count


def exchange_exists(conn, exchange):
    ch = conn.channel()
    try:
        ch.exchange_declare(exchange, passive=True)
    except pika.exceptions.ChannelClosedByBroker as e:
        assert e.reply_code == 404, e
        return False
    ch.close()
    return True


def get_one(ch, queue, timeout=5, auto_ack=False):
    """basic.get until a message arrives; returns (method, properties, body)."""
    deadline = time.time() + timeout
    while True:
        method, props, body = ch.basic_get(queue, auto_ack=auto_ack)
        if method is not None:
            return method, props, body
        if time.time() > deadline:
            raise AssertionError(f"no message in {queue!r} within {timeout}s")
        time.sleep(0.05)


def drain(ch, queue, expect, timeout=5):
    """basic.get (auto-ack) until `expect` messages came, then checks nothing more is there;
    returns the bodies in order."""
    bodies, deadline = [], time.time() + timeout
    while len(bodies) < expect:
        method, _props, body = ch.basic_get(queue, auto_ack=True)
        if method is None:
            if time.time() > deadline:
                raise AssertionError(f"{queue!r}: only {bodies} within {timeout}s, expected {expect}")
            time.sleep(0.05)
            continue
        bodies.append(body)
    time.sleep(0.1)
    method, _props, body = ch.basic_get(queue, auto_ack=True)
    assert method is None, f"{queue!r}: unexpected extra message {body!r} after {bodies}"
    return bodies


def delete_queues(conn, *queues):
    ch = conn.channel()
    for q in queues:
        ch.queue_delete(q)
    ch.close()


def delete_exchanges(conn, *exchanges):
    ch = conn.channel()
    for x in exchanges:
        ch.exchange_delete(x)
    ch.close()
