"""The seed documents' programs (tests/python/seeds/, see the header of each for what changed
versus its document), run as their users run them: as separate processes against the broker.

The programs fix their own names ('order', 'order_notify', 'number', ...): these tests delete
those before and after use, so that a run against a shared broker starts clean.
"""
import collections
import json
import sys
import uuid

import pika
import pytest

from helpers import delete_exchanges, delete_queues, exchange_exists, queue_counts, wait_until


# --- the pika blog: publish.py, notify.py, report.py (pika 0.13 API) -----------------------------

@pytest.fixture
def blog(connect):
    conn = connect()
    delete_queues(conn, "order_notify", "order_report")
    delete_exchanges(conn, "order")
    yield conn
    delete_queues(conn, "order_notify", "order_report")
    delete_exchanges(conn, "order")


def run_to_end(program, path, python=None, args=()):
    p = program(path, python, args)
    assert p.finish() == 0, f"{path} failed:\n{p.output}"
    return p


def test_blog_order_reaches_notify_and_report(program, legacy_python, blog):
    # As in the blog: the first publish goes nowhere (no queue is bound yet) ...
    first = run_to_end(program, "pika_blog/publish.py", legacy_python)
    assert first.lines == [" [x] Sent notify message", " [x] Sent report message"]
    # ... then both consumers start, and the next order reaches each of them.
    notify = program("pika_blog/notify.py", legacy_python)
    report = program("pika_blog/report.py", legacy_python)
    notify.wait_for(" [*] Waiting for notify messages. To exit press CTRL+C")
    report.wait_for(" [*] Waiting for report messages. To exit press CTRL+C")
    run_to_end(program, "pika_blog/publish.py", legacy_python)
    notify.wait_for(" [x] Done")
    report.wait_for(" [x] Done")
    assert [l for l in notify.lines if l.startswith(" [x]")] == [
        " [x] Notifying john.doe@example.com", " [x] Done"]
    fields = dict(l.strip().split(": ", 1) for l in report.lines if ": " in l)
    assert fields["User Email"] == "john.doe@example.com"
    assert fields["Product"] == "Leather Jacket"
    assert fields["Quantity"] == "1"
    uuid.UUID(fields["ID"])
    assert sum(l == " [x] Generating report" for l in report.lines) == 1, "the first order was unroutable"
    # Both queues are empty, each with its consumer still attached.
    assert queue_counts(blog, "order_notify") == (0, 1)
    assert queue_counts(blog, "order_report") == (0, 1)


def test_blog_orders_wait_for_a_consumer_that_was_down(program, legacy_python, blog):
    """The blog: "When the consumer is up again, it will receive those messages that web
    application has sent." Also: publish.py works unchanged with pika 1.3 as with pika 0.13."""
    run_to_end(program, "pika_blog/publish.py", legacy_python)  # declares 'order' (notify.py binds to it)
    notify = program("pika_blog/notify.py", legacy_python)
    notify.wait_for("Waiting for notify messages")
    notify.stop()
    wait_until(lambda: queue_counts(blog, "order_notify") == (0, 0), what="the consumer to go")
    run_to_end(program, "pika_blog/publish.py", legacy_python)
    run_to_end(program, "pika_blog/publish.py", sys.executable)  # pika 1.3.2
    wait_until(lambda: queue_counts(blog, "order_notify") == (2, 0), what="2 waiting orders")
    notify = program("pika_blog/notify.py", legacy_python)
    notify.wait_for(" [x] Done", count=2)
    assert [l for l in notify.lines if "Notifying" in l] == [" [x] Notifying john.doe@example.com"] * 2
    assert queue_counts(blog, "order_notify") == (0, 1)


# --- the summer camp: kombu number_producer.py / number_consumer.py -------------------------------

@pytest.fixture
def numbers(connect):
    conn = connect()
    delete_queues(conn, "number")
    delete_exchanges(conn, "number")
    yield conn
    delete_queues(conn, "number")
    delete_exchanges(conn, "number")


def squares(program_):
    return [int(l) for l in program_.lines if l.strip().isdigit()]


def test_number_producer_fills_the_queue_and_a_consumer_squares_in_order(program, numbers):
    # "Run it and just watch in the admin panel how it fills up the queue."
    run_to_end(program, "summercamp/number_producer.py")
    wait_until(lambda: queue_counts(numbers, "number") == (1000, 0), what="1000 numbers queued")
    ch = numbers.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.queue_declare("number", durable=False, passive=False)
    assert e.value.reply_code == 406, "the notebook's queue is durable"
    consumer = program("summercamp/number_consumer.py")
    wait_until(lambda: len(squares(consumer)) >= 1000, timeout=30, what=f"1000 squares:\n{consumer.output}")
    assert squares(consumer) == [i * i for i in range(1000)], "one consumer: squares in publish order"
    wait_until(lambda: queue_counts(numbers, "number") == (0, 1), what="an empty queue")


def test_number_squares_shared_by_competing_consumers(program, numbers):
    # "If we launch more instances of the consumer ... they will eat the messages much more quickly."
    consumers = [program("summercamp/number_consumer.py") for _ in range(2)]
    wait_until(lambda: (queue_counts(numbers, "number") or (0, 0))[1] == 2, timeout=20,
               what="two consumers on 'number'")
    run_to_end(program, "summercamp/number_producer.py")
    wait_until(lambda: sum(len(squares(c)) for c in consumers) >= 1000, timeout=30,
               what="1000 squares from the two consumers")
    wait_until(lambda: queue_counts(numbers, "number") == (0, 2), what="an empty queue")
    got = [collections.Counter(squares(c)) for c in consumers]
    assert got[0] + got[1] == collections.Counter(i * i for i in range(1000)), "each number squared exactly once"
    assert min(sum(g.values()) for g in got) >= 100, f"work is shared: {[sum(g.values()) for g in got]}"


# --- the summer camp chat exercise (summercamp/chat.py) -------------------------------------------

@pytest.fixture
def chat(program, connect, name):
    prefix = f"{name}.chat"

    def run(speaker, *args):
        return program("summercamp/chat.py", args=(speaker, *args), env={"CHAT_PREFIX": prefix})

    yield run
    delete_exchanges(connect(), *(f"{prefix}.{x}" for x in ("all", "topics", "direct", "chosen")))


def chat_listeners(chat, interests):
    listeners = {user: chat(user, "listen", *topics) for user, topics in interests.items()}
    for user, p in listeners.items():
        p.wait_for(f"{user} is listening")
    return listeners


def say(chat, *args):
    p = chat(*args)
    assert p.finish() == 0, p.output


def inbox(listener, until):
    """The lines a listener printed, once it has printed `until` (the last message sent)."""
    listener.wait_for(until)
    return [l for l in listener.lines if " <- " in l]


def test_chat_fanout_reaches_everyone_and_topic_only_the_interested(chat):
    people = chat_listeners(chat, {"ann": ["python.#"], "bob": ["rust.*", "*.release"], "cid": []})
    say(chat, "ann", "all", "hello everyone")
    say(chat, "bob", "topic", "python.asyncio.tips", "py news")
    say(chat, "ann", "topic", "rust.tokio", "rs news")
    say(chat, "ann", "topic", "rust.tokio.deep", "too deep for rust.*")
    say(chat, "cid", "topic", "go.release", "go 1.22 is out")
    say(chat, "cid", "topic", "haskell", "nobody listens")
    say(chat, "cid", "all", "bye")
    assert inbox(people["ann"], "cid: bye") == [
        "ann <- ann: hello everyone", "ann <- bob: py news", "ann <- cid: bye"]
    assert inbox(people["bob"], "cid: bye") == [
        "bob <- ann: hello everyone", "bob <- ann: rs news", "bob <- cid: go 1.22 is out", "bob <- cid: bye"]
    assert inbox(people["cid"], "cid: bye") == ["cid <- ann: hello everyone", "cid <- cid: bye"]


def test_chat_direct_reaches_one_and_headers_the_chosen(chat):
    people = chat_listeners(chat, {"ann": [], "bob": [], "cid": []})
    say(chat, "ann", "one", "cid", "psst cid")
    say(chat, "cid", "chosen", "ann,bob", "for ann and bob")
    say(chat, "bob", "chosen", "dan", "dan is not here")
    say(chat, "bob", "one", "ann", "hi ann")
    say(chat, "ann", "all", "bye")
    assert inbox(people["ann"], "ann: bye") == [
        "ann <- cid: for ann and bob", "ann <- bob: hi ann", "ann <- ann: bye"]
    assert inbox(people["bob"], "ann: bye") == ["bob <- cid: for ann and bob", "bob <- ann: bye"]
    assert inbox(people["cid"], "ann: bye") == ["cid <- ann: psst cid", "cid <- ann: bye"]


# --- the nzpug slide's consumer (py-amqp) ----------------------------------------------------------

@pytest.mark.parametrize("kind,binding_key,routed,unrouted", [
    ("direct", "crawl", "crawl", ["process", "crawl.web"]),
    ("fanout", "ignored", "anything", []),
    ("topic", "crawl.*", "crawl.web", ["crawl.web.deep", "crawl", "process.web"]),
])
def test_nzpug_consumer_gets_what_its_binding_routes(program, connect, name, kind, binding_key, routed, unrouted):
    exchange, queue = f"{name}.{kind}", f"{name}.q"
    consumer = program("nzpug/consumer.py", env={
        "EXCHANGE": exchange, "EXCHANGE_TYPE": kind, "QUEUE": queue, "ROUTING_KEY": binding_key})
    conn = connect()
    wait_until(lambda: queue_counts(conn, queue) == (0, 1), timeout=20,
               what=f"the consumer to attach:\n{consumer.output}")
    ch = conn.channel()
    ch.confirm_delivery()
    ch.basic_publish(exchange, routed, b"first")
    for key in unrouted:
        ch.basic_publish(exchange, key, f"not for me ({key})".encode())
    ch.basic_publish(exchange, routed, b"last")
    consumer.wait_for("b'last'")
    assert consumer.lines == ["b'first'", "b'last'"]
    # py-amqp declares queues and exchanges auto-delete by default: when the consumer goes, its
    # queue goes, and with its last binding gone, the exchange too.
    consumer.stop()
    wait_until(lambda: queue_counts(conn, queue) is None, what="the auto-delete queue to go")
    wait_until(lambda: not exchange_exists(conn, exchange), what="the auto-delete exchange to go")
