"""The messaging patterns the seed documents teach (mostly the OpenQuake talk, whose code is not in
the documents), written with pika 1.3 and kombu as their users would, plus the everyday basics
those patterns stand on. Every name is unique per test."""
import json
import threading
import time
import uuid

import kombu
import pika
import pytest

from helpers import delete_exchanges, delete_queues, drain, get_one, queue_counts, wait_until


def pump(conn, until, timeout=10, what="replies"):
    """Runs a BlockingConnection's I/O until `until()` is true."""
    deadline = time.time() + timeout
    while not until():
        assert time.time() < deadline, f"timed out after {timeout}s waiting for {what}"
        conn.process_data_events(time_limit=0.05)


class RpcServer:
    """A squaring RPC server consuming `queue` on its own connection in a thread."""

    def __init__(self, connect, queue, ident):
        self.conn = connect()
        self.ch = self.conn.channel()
        self.ch.queue_declare(queue)
        self.ch.basic_qos(prefetch_count=1)
        self.ch.basic_consume(queue, self.on_request)
        self.ident = ident
        self.thread = threading.Thread(target=self.ch.start_consuming, daemon=True)
        self.thread.start()

    def on_request(self, ch, method, props, body):
        # Some work, as a real server does: with prefetch 1 a server gets the next request once
        # it acked the last, so without it the server whose acks travel least (on the queue's
        # node) takes most requests; with it both are available about as often.
        time.sleep(0.05)
        reply = {"square": int(body) ** 2, "server": self.ident}
        ch.basic_publish("", props.reply_to, json.dumps(reply).encode(),
                         pika.BasicProperties(correlation_id=props.correlation_id))
        ch.basic_ack(method.delivery_tag)

    def stop(self):
        self.conn.add_callback_threadsafe(self.ch.stop_consuming)
        self.thread.join(5)
        assert not self.thread.is_alive()
        self.conn.close()


def test_rpc_with_private_reply_queue_and_correlation_id(connect, name):
    """OpenQuake talk, pattern 1: a private, temporary, uniquely named reply queue; its name in
    reply_to; a correlation id per request; requests round-robin over the servers."""
    servers = [RpcServer(connect, name, i) for i in (1, 2)]
    client = connect()
    ch = client.channel()
    reply_queue = ch.queue_declare("", exclusive=True, auto_delete=True).method.queue
    assert reply_queue.startswith("amq.gen-")
    answers = {}
    ch.basic_consume(reply_queue, lambda c, m, p, b: answers.__setitem__(p.correlation_id, json.loads(b)),
                     auto_ack=True)
    asked = {}
    for n in range(20):
        cid = str(uuid.uuid4())
        asked[cid] = n
        ch.basic_publish("", name, str(n).encode(), pika.BasicProperties(reply_to=reply_queue, correlation_id=cid))
    pump(client, lambda: len(answers) == 20)
    assert {cid: a["square"] for cid, a in answers.items()} == {cid: n * n for cid, n in asked.items()}
    served = [sum(a["server"] == i for a in answers.values()) for i in (1, 2)]
    assert min(served) >= 5, f"requests are shared by the two servers: {served}"
    for s in servers:
        s.stop()
    client.close()
    probe = connect()
    wait_until(lambda: queue_counts(probe, reply_queue) is None, what="the private reply queue to go with its connection")
    delete_queues(probe, name)


def test_rpc_with_direct_reply_to(connect, name):
    """RabbitMQ's direct reply-to: consume amq.rabbitmq.reply-to (no-ack) before publishing."""
    server = RpcServer(connect, name, "s")
    client = connect()
    ch = client.channel()
    replies = []
    ch.basic_consume("amq.rabbitmq.reply-to", lambda c, m, p, b: replies.append((m, p, json.loads(b))), auto_ack=True)
    for n, cid in [(7, "c7"), (9, "c9")]:
        ch.basic_publish("", name, str(n).encode(),
                         pika.BasicProperties(reply_to="amq.rabbitmq.reply-to", correlation_id=cid))
    pump(client, lambda: len(replies) == 2)
    assert [(p.correlation_id, body["square"]) for _m, p, body in replies] == [("c7", 49), ("c9", 81)]
    method = replies[0][0]
    assert method.exchange == "" and method.routing_key.startswith("amq.rabbitmq.reply-to.")
    server.stop()
    delete_queues(client, name)


def test_direct_reply_to_address_seen_by_the_server(connect, name):
    server = connect()
    sch = server.channel()
    sch.queue_declare(name, auto_delete=True)
    client = connect()
    cch = client.channel()
    got = []
    cch.basic_consume("amq.rabbitmq.reply-to", lambda c, m, p, b: got.append((m.routing_key, p.correlation_id, b)),
                      auto_ack=True)
    cch.basic_publish("", name, b"ping", pika.BasicProperties(reply_to="amq.rabbitmq.reply-to", correlation_id="c1"))
    _method, props, body = get_one(sch, name, auto_ack=True)
    assert body == b"ping"
    assert props.reply_to.startswith("amq.rabbitmq.reply-to.") and len(props.reply_to) > len("amq.rabbitmq.reply-to.")
    sch.basic_publish("", props.reply_to, b"pong", pika.BasicProperties(correlation_id=props.correlation_id))
    pump(client, lambda: got)
    assert got == [(props.reply_to, "c1", b"pong")]


def test_pipes_and_filters_rejected_documents_dead_letter_into_the_failure_queue(connect, name):
    """OpenQuake talk, pattern 2: a series of queues, one queue for failure reports. A filter that
    cannot handle a document rejects it (requeue=False); the queue's dead-letter exchange takes it
    to the failure queue."""
    conn = connect()
    ch = conn.channel()
    stages = [f"{name}.parse", f"{name}.enrich", f"{name}.store"]
    failures, dlx = f"{name}.failures", f"{name}.dlx"
    ch.exchange_declare(dlx, "fanout")
    ch.queue_declare(failures)
    ch.queue_bind(failures, dlx)
    for s in stages:
        ch.queue_declare(s, arguments={"x-dead-letter-exchange": dlx})
    docs = [{"id": 1, "text": "ok"}, {"id": 2, "text": ""}, {"id": 3, "text": "fine"}, {"id": 4, "text": "BAD"}]
    for doc in docs:
        ch.basic_publish("", stages[0], json.dumps(doc).encode())

    def parse(doc):
        return bool(doc["text"])

    def enrich(doc):
        return doc["text"] != "BAD"

    for stage, next_stage, accepts, count in [(stages[0], stages[1], parse, 4), (stages[1], stages[2], enrich, 3)]:
        for _ in range(count):
            method, _props, body = get_one(ch, stage)
            doc = json.loads(body)
            if accepts(doc):
                doc["path"] = doc.get("path", []) + [stage]
                ch.basic_publish("", next_stage, json.dumps(doc).encode())
                ch.basic_ack(method.delivery_tag)
            else:
                ch.basic_reject(method.delivery_tag, requeue=False)
    stored = [json.loads(b) for b in drain(ch, stages[2], expect=2)]
    assert [(d["id"], d["path"]) for d in stored] == [(1, stages[:2]), (3, stages[:2])]
    failed = {}
    for _ in range(2):
        _m, props, body = get_one(ch, failures, auto_ack=True)
        failed[json.loads(body)["id"]] = props.headers
    assert sorted(failed) == [2, 4]
    for doc_id, stage in [(2, stages[0]), (4, stages[1])]:
        headers = failed[doc_id]
        (death,) = headers["x-death"]
        assert (death["queue"], death["reason"], death["count"], death["exchange"], death["routing-keys"]) == (
            stage, "rejected", 1, "", [stage])
        assert (headers["x-first-death-queue"], headers["x-first-death-reason"], headers["x-first-death-exchange"]) == (
            stage, "rejected", "")
    assert all(queue_counts(conn, q) == (0, 0) for q in stages + [failures])
    delete_queues(conn, *stages, failures)
    delete_exchanges(conn, dlx)


def test_pipes_and_filters_failures_republished_to_a_failure_queue(connect, name):
    """The same pipeline with consumers; a filter that fails publishes a failure report (the
    document and the error) to the failure queue itself and acks the input."""
    conn = connect()
    ch = conn.channel()
    source, sink, failures = f"{name}.in", f"{name}.out", f"{name}.failures"
    for q in (source, sink, failures):
        ch.queue_declare(q, durable=True)

    def double(ch_, method, props, body):
        try:
            out = str(2 * int(body)).encode()
            ch_.basic_publish("", sink, out, pika.BasicProperties(delivery_mode=2))
        except ValueError as e:
            ch_.basic_publish("", failures, body, pika.BasicProperties(
                delivery_mode=2, headers={"stage": "double", "error": str(e)}))
        ch_.basic_ack(method.delivery_tag)

    ch.basic_consume(source, double)
    for body in [b"1", b"two", b"3", b"", b"5"]:
        ch.basic_publish("", source, body, pika.BasicProperties(delivery_mode=2))
    results, reports = [], []
    out = conn.channel()
    out.basic_consume(sink, lambda c, m, p, b: results.append(b), auto_ack=True)
    out.basic_consume(failures, lambda c, m, p, b: reports.append((b, p.headers, p.delivery_mode)), auto_ack=True)
    pump(conn, lambda: len(results) + len(reports) == 5)
    assert results == [b"2", b"6", b"10"]
    assert reports == [
        (b"two", {"stage": "double", "error": "invalid literal for int() with base 10: b'two'"}, 2),
        (b"", {"stage": "double", "error": "invalid literal for int() with base 10: b''"}, 2),
    ]
    assert queue_counts(conn, source) == (0, 1)
    delete_queues(conn, source, sink, failures)


def test_topic_patterns(connect, name):
    """OpenQuake talk, pattern 3: *.en.# and twitter.#."""
    conn = connect()
    ch = conn.channel()
    x = f"{name}.topics"
    ch.exchange_declare(x, "topic")
    english = ch.queue_declare("", exclusive=True).method.queue
    twitter = ch.queue_declare("", exclusive=True).method.queue
    everything = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(english, x, "*.en.#")
    ch.queue_bind(twitter, x, "twitter.#")
    ch.queue_bind(everything, x, "#")
    keys = ["news.en", "news.en.sport.live", "news.de", "twitter", "twitter.en.x", "en", "en.news", "twitterx.en"]
    for key in keys:
        ch.basic_publish(x, key, key.encode())
    assert drain(ch, english, expect=4) == [b"news.en", b"news.en.sport.live", b"twitter.en.x", b"twitterx.en"]
    assert drain(ch, twitter, expect=2) == [b"twitter", b"twitter.en.x"]
    assert drain(ch, everything, expect=len(keys)) == [k.encode() for k in keys]
    delete_exchanges(conn, x)


def test_passive_declare_checks_existence(connect, name):
    """OpenQuake talk: "declaring queues 2x is fine"; "check existence by declaring with passive"."""
    conn = connect()
    ch = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.queue_declare(name, passive=True)
    assert (e.value.reply_code, e.value.reply_text) == (404, f"NOT_FOUND - no queue '{name}' in vhost '/'")
    assert ch.is_closed, "a failed passive declare closes the channel"
    ch = conn.channel()
    ch.confirm_delivery()
    assert ch.queue_declare(name).method.queue == name
    ch.basic_publish("", name, b"x")
    assert queue_counts(conn, name) == (1, 0)
    assert ch.queue_declare(name).method.message_count == 1, "declaring again keeps the queue and its message"
    # A passive declare only checks existence: the other flags are not compared.
    assert ch.queue_declare(name, passive=True, durable=True, exclusive=True).method.message_count == 1
    delete_queues(conn, name)


def test_durable_queue_keeps_persistent_messages_and_their_properties(connect, name):
    """OpenQuake talk: "Surviving a reboot: exchanges, queues durable; delivery mode persistent"."""
    conn = connect()
    ch = conn.channel()
    ch.exchange_declare(name, "direct", durable=True)
    ch.queue_declare(name, durable=True)
    ch.queue_bind(name, name, "k")
    ch.confirm_delivery()
    props = pika.BasicProperties(delivery_mode=2, content_type="application/json", message_id="m-1",
                                 priority=3, headers={"n": 1, "tags": ["a", "b"]}, timestamp=1700000000)
    ch.basic_publish(name, "k", b'{"keep": true}', props, mandatory=True)
    method, got, body = get_one(ch, name, auto_ack=True)
    assert body == b'{"keep": true}' and (method.exchange, method.routing_key) == (name, "k")
    assert (got.delivery_mode, got.content_type, got.message_id, got.priority, got.headers, got.timestamp) == (
        2, "application/json", "m-1", 3, {"n": 1, "tags": ["a", "b"]}, 1700000000)
    # Redeclaring it non-durable is refused: the queue really is durable.
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.queue_declare(name, durable=False)
    assert e.value.reply_code == 406
    delete_queues(conn, name)
    delete_exchanges(conn, name)


def test_work_queue_with_prefetch_one_gives_the_slow_worker_fewer(connect, node_url, name):
    """Competing workers with basic_qos(prefetch_count=1): a slow worker gets fewer tasks; every
    task is done once."""
    conn = connect()
    ch = conn.channel()
    ch.queue_declare(name, durable=True)
    ch.confirm_delivery()
    for i in range(40):
        ch.basic_publish("", name, str(i).encode(), pika.BasicProperties(delivery_mode=2))
    done = {"fast": [], "slow": []}

    def worker(kind, delay, url):
        c = pika.BlockingConnection(pika.URLParameters(url))
        wch = c.channel()
        wch.basic_qos(prefetch_count=1)

        def on_task(ch_, method, props, body):
            time.sleep(delay)
            done[kind].append(int(body))
            ch_.basic_ack(method.delivery_tag)

        wch.basic_consume(name, on_task)
        deadline = time.time() + 20
        while sum(len(v) for v in done.values()) < 40 and time.time() < deadline:
            c.process_data_events(time_limit=0.05)
        c.close()

    threads = [threading.Thread(target=worker, args=(kind, delay, node_url(f"{kind} worker")))
               for kind, delay in (("slow", 0.25), ("fast", 0.0))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(done["fast"] + done["slow"]) == list(range(40))
    assert 1 <= len(done["slow"]) < 10 < len(done["fast"]), {k: len(v) for k, v in done.items()}
    assert queue_counts(conn, name) == (0, 0)
    delete_queues(conn, name)


def test_prefetch_count_limits_unacked_deliveries(connect, name):
    conn = connect()
    ch = conn.channel()
    ch.queue_declare(name, exclusive=True)
    ch.confirm_delivery()
    for i in range(10):
        ch.basic_publish("", name, str(i).encode())
    ch.basic_qos(prefetch_count=3)
    got = []
    ch.basic_consume(name, lambda c, m, p, b: got.append(m.delivery_tag))
    pump(conn, lambda: len(got) == 3)
    conn.process_data_events(time_limit=0.3)
    assert len(got) == 3, "no more than prefetch_count unacked deliveries"
    assert queue_counts(conn, name) == (7, 1)
    ch.basic_ack(got[1], multiple=True)  # acks the first two
    pump(conn, lambda: len(got) == 5)
    conn.process_data_events(time_limit=0.3)
    assert len(got) == 5
    assert queue_counts(conn, name) == (5, 1)


def test_unacked_messages_come_back_redelivered_when_a_consumer_dies(connect, name):
    conn = connect()
    ch = conn.channel()
    ch.queue_declare(name)
    ch.confirm_delivery()
    ch.basic_publish("", name, b"task")
    dying = connect()
    method, _, body = get_one(dying.channel(), name)
    assert body == b"task" and not method.redelivered
    dying.close()  # without acking
    method, _, body = get_one(ch, name, auto_ack=True)
    assert body == b"task" and method.redelivered
    delete_queues(conn, name)


def test_nack_and_reject_with_requeue_redeliver_with_the_flag_set(connect, name):
    conn = connect()
    ch = conn.channel()
    ch.queue_declare(name, exclusive=True)
    ch.confirm_delivery()
    for body in (b"a", b"b"):
        ch.basic_publish("", name, body)
    method, _, body = get_one(ch, name)
    assert (body, method.redelivered) == (b"a", False)
    ch.basic_nack(method.delivery_tag, requeue=True)
    method, _, body = get_one(ch, name)
    assert (body, method.redelivered) == (b"a", True), "a requeued message keeps its place at the head"
    ch.basic_reject(method.delivery_tag, requeue=True)
    method, _, body = get_one(ch, name)
    assert (body, method.redelivered) == (b"a", True)
    ch.basic_reject(method.delivery_tag, requeue=False)  # no dead-letter exchange: dropped
    method, _, body = get_one(ch, name)
    assert (body, method.redelivered) == (b"b", False)
    ch.basic_ack(method.delivery_tag)
    assert queue_counts(conn, name) == (0, 0)
    # The same through a consumer: nack(requeue) of two deliveries at once (multiple=True).
    for body in (b"c", b"d"):
        ch.basic_publish("", name, body)
    seen = []
    tag = ch.basic_consume(name, lambda c, m, p, b: seen.append((b, m.redelivered, m.delivery_tag)))
    pump(conn, lambda: len(seen) == 2)
    ch.basic_nack(seen[1][2], multiple=True, requeue=True)
    pump(conn, lambda: len(seen) == 4)
    assert [(b, r) for b, r, _t in seen] == [(b"c", False), (b"d", False), (b"c", True), (b"d", True)]
    ch.basic_ack(seen[3][2], multiple=True)
    ch.basic_cancel(tag)
    assert queue_counts(conn, name) == (0, 0)


def test_basic_get_and_get_empty(connect, name):
    conn = connect()
    ch = conn.channel()
    ch.queue_declare(name, exclusive=True)
    assert ch.basic_get(name) == (None, None, None), "get-empty on an empty queue"
    ch.confirm_delivery()
    for i in range(3):
        ch.basic_publish("", name, f"m{i}".encode(), pika.BasicProperties(message_id=str(i)))
    got = []
    for _ in range(3):
        method, props, body = ch.basic_get(name, auto_ack=True)
        got.append((body, props.message_id, method.message_count, method.routing_key, method.exchange))
    assert got == [(b"m0", "0", 2, name, ""), (b"m1", "1", 1, name, ""), (b"m2", "2", 0, name, "")]
    assert ch.basic_get(name) == (None, None, None)
    # Without auto-ack the message waits for its ack; closing the channel puts it back.
    ch.basic_publish("", name, b"again")
    method, _, _ = ch.basic_get(name)
    assert queue_counts(conn, name) == (0, 0)
    ch.close()
    ch = conn.channel()
    method, _, body = get_one(ch, name, auto_ack=True)
    assert (body, method.redelivered) == (b"again", True)


def test_publisher_confirms_and_mandatory_unroutable(connect, name):
    conn = connect()
    ch = conn.channel()
    ch.queue_declare(name, exclusive=True)
    ch.confirm_delivery()
    ch.basic_publish("", name, b"confirmed", mandatory=True)  # returns normally: acked
    with pytest.raises(pika.exceptions.UnroutableError) as e:
        ch.basic_publish("", f"{name}.nowhere", b"lost", mandatory=True)
    (returned,) = e.value.messages
    assert (returned.method.reply_code, returned.method.reply_text, returned.body) == (312, "NO_ROUTE", b"lost")
    ch.basic_publish("", f"{name}.nowhere", b"dropped silently")  # not mandatory: just acked
    assert queue_counts(conn, name) == (1, 0)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.basic_publish(f"{name}.no-exchange", "k", b"x")
    assert (e.value.reply_code, e.value.reply_text) == (404, f"NOT_FOUND - no exchange '{name}.no-exchange' in vhost '/'")


def test_transactions_commit_and_rollback(connect, name):
    conn = connect()
    ch = conn.channel()
    ch.queue_declare(name, exclusive=True)
    ch.tx_select()
    ch.basic_publish("", name, b"a")
    assert queue_counts(conn, name) == (0, 0), "nothing before commit"
    ch.tx_commit()
    assert queue_counts(conn, name) == (1, 0)
    ch.basic_publish("", name, b"b")
    ch.tx_rollback()
    assert queue_counts(conn, name) == (1, 0), "the rolled back publish never arrives"
    method, _, body = ch.basic_get(name)
    assert body == b"a"
    ch.basic_ack(method.delivery_tag)
    ch.tx_rollback()  # undoes the ack: the message stays unacked on this channel
    assert queue_counts(conn, name) == (0, 0)
    ch.basic_ack(method.delivery_tag)
    ch.tx_commit()
    ch.close()  # had the ack not been committed, closing would requeue the message
    assert queue_counts(conn, name) == (0, 0)


def test_headers_exchange(connect, name):
    conn = connect()
    ch = conn.channel()
    q_all = ch.queue_declare("", exclusive=True).method.queue
    q_any = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q_all, "amq.headers", arguments={"x-match": "all", "fmt": "pdf", "type": "report"})
    ch.queue_bind(q_any, "amq.headers", arguments={"x-match": "any", "fmt": "pdf", "type": "report"})
    ch.basic_publish("amq.headers", "", b"both", pika.BasicProperties(headers={"fmt": "pdf", "type": "report"}))
    ch.basic_publish("amq.headers", "", b"one", pika.BasicProperties(headers={"fmt": "pdf"}))
    ch.basic_publish("amq.headers", "", b"none", pika.BasicProperties(headers={"fmt": "png"}))
    assert drain(ch, q_all, expect=1) == [b"both"]
    assert drain(ch, q_any, expect=2) == [b"both", b"one"]


def test_kombu_simple_queue(node_url, name):
    with kombu.Connection(node_url("kombu connection")) as conn:
        q = conn.SimpleQueue(name)
        for i in range(3):
            q.put({"n": i})
        got = []
        for _ in range(3):
            msg = q.get(timeout=5)
            got.append(msg.payload)
            msg.ack()
        assert got == [{"n": 0}, {"n": 1}, {"n": 2}]
        with pytest.raises(q.Empty):
            q.get(timeout=0.3)
        assert q.qsize() == 0
        q.close()
        conn.default_channel.queue_delete(name)
        conn.default_channel.exchange_delete(name)


def test_kombu_producer_and_consumer_on_a_topic_exchange(node_url, name):
    """The consumer and the producer on connections of their own (on two nodes of a cluster)."""
    with kombu.Connection(node_url("kombu consumer")) as conn, \
            kombu.Connection(node_url("kombu producer")) as publishing:
        exchange = kombu.Exchange(f"{name}.x", "topic", durable=False)
        queue = kombu.Queue(f"{name}.q", exchange, routing_key="a.#", auto_delete=True)
        got = []
        with conn.Consumer(queue, callbacks=[lambda body, m: (got.append(body), m.ack())]):
            producer = publishing.Producer(serializer="json")
            for key, n in [("a.b", 1), ("b.a", 2), ("a", 3), ("a.b.c", 4)]:
                producer.publish({"n": n}, exchange=exchange, routing_key=key)
            deadline = time.time() + 5
            while len(got) < 3 and time.time() < deadline:
                try:
                    conn.drain_events(timeout=0.2)
                except TimeoutError:
                    pass
        assert got == [{"n": 1}, {"n": 3}, {"n": 4}]
        conn.default_channel.exchange_delete(f"{name}.x")
