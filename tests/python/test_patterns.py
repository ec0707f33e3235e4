"""The messaging patterns of the seed documents, written with pika and kombu as their users would."""
import json
import threading
import time
import uuid

import kombu
import pika
import pytest


def connect(amqp_url):
    return pika.BlockingConnection(pika.URLParameters(amqp_url))


def drain(ch, queue, timeout=5.0, expect=None):
    """basic.get until the queue is empty (or `expect` messages came); returns the bodies."""
    bodies, deadline = [], time.time() + timeout
    while time.time() < deadline:
        method, _props, body = ch.basic_get(queue, auto_ack=True)
        if method is None:
            if expect is None or len(bodies) >= expect:
                break
            time.sleep(0.05)
            continue
        bodies.append(body)
    return bodies


def test_rpc_with_private_reply_queue_and_correlation_id(amqp_url, name):
    """OpenQuake talk, pattern 1: private auto-delete reply queue, reply_to, correlation id."""
    server_conn = connect(amqp_url)
    sch = server_conn.channel()
    sch.queue_declare(name)
    sch.basic_qos(prefetch_count=1)

    def on_request(ch, method, props, body):
        n = int(body)
        ch.basic_publish("", props.reply_to, str(n * n).encode(),
                         pika.BasicProperties(correlation_id=props.correlation_id))
        ch.basic_ack(method.delivery_tag)

    sch.basic_consume(name, on_request)
    worker = threading.Thread(target=lambda: sch.start_consuming(), daemon=True)
    worker.start()

    client = connect(amqp_url)
    cch = client.channel()
    reply = cch.queue_declare("", exclusive=True, auto_delete=True).method.queue
    assert reply.startswith("amq.gen-")
    answers = {}
    cch.basic_consume(reply, lambda ch, m, p, b: answers.__setitem__(p.correlation_id, int(b)), auto_ack=True)
    ids = {}
    for n in range(10):
        cid = str(uuid.uuid4())
        ids[cid] = n
        cch.basic_publish("", name, str(n).encode(), pika.BasicProperties(reply_to=reply, correlation_id=cid))
    deadline = time.time() + 10
    while len(answers) < 10 and time.time() < deadline:
        client.process_data_events(time_limit=0.1)
    assert answers == {cid: n * n for cid, n in ids.items()}
    client.close()
    # The private reply queue went with its connection.
    probe = connect(amqp_url).channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        probe.queue_declare(reply, passive=True)
    assert e.value.reply_code == 404
    server_conn.add_callback_threadsafe(sch.stop_consuming)
    worker.join(5)
    server_conn.close()


def test_direct_reply_to(amqp_url, name):
    server = connect(amqp_url)
    sch = server.channel()
    sch.queue_declare(name, auto_delete=True)
    client = connect(amqp_url)
    cch = client.channel()
    got = []
    cch.basic_consume("amq.rabbitmq.reply-to", lambda ch, m, p, b: got.append((p.correlation_id, b)), auto_ack=True)
    cch.basic_publish("", name, b"ping", pika.BasicProperties(reply_to="amq.rabbitmq.reply-to", correlation_id="c1"))
    method, props, body = None, None, None
    deadline = time.time() + 5
    while method is None and time.time() < deadline:
        method, props, body = sch.basic_get(name, auto_ack=True)
    assert body == b"ping"
    assert props.reply_to.startswith("amq.rabbitmq.reply-to.")
    sch.basic_publish("", props.reply_to, b"pong", pika.BasicProperties(correlation_id=props.correlation_id))
    deadline = time.time() + 5
    while not got and time.time() < deadline:
        client.process_data_events(time_limit=0.1)
    assert got == [("c1", b"pong")]
    client.close()
    server.close()


def test_pipes_and_filters_with_a_failure_queue(amqp_url, name):
    """OpenQuake talk, pattern 2: a series of queues, and one queue for failure reports."""
    conn = connect(amqp_url)
    ch = conn.channel()
    stages = [f"{name}.parse", f"{name}.enrich", f"{name}.store"]
    failures = f"{name}.failures"
    ch.exchange_declare(f"{name}.dlx", "fanout")
    ch.queue_declare(failures)
    ch.queue_bind(failures, f"{name}.dlx")
    for s in stages:
        ch.queue_declare(s, arguments={"x-dead-letter-exchange": f"{name}.dlx"})
    for doc in [{"id": 1, "text": "ok"}, {"id": 2, "text": ""}, {"id": 3, "text": "fine"}]:
        ch.basic_publish("", stages[0], json.dumps(doc).encode())
    # Each filter takes from its queue and passes to the next; a bad document is rejected and so
    # dead-lettered into the failure queue.
    for i, stage in enumerate(stages[:-1]):
        for _ in range(3 if i == 0 else 2):
            method, _, body = None, None, None
            deadline = time.time() + 5
            while method is None and time.time() < deadline:
                method, _, body = ch.basic_get(stage)
            assert method is not None, f"nothing reached {stage}"
            doc = json.loads(body)
            if not doc["text"]:
                ch.basic_reject(method.delivery_tag, requeue=False)
            else:
                doc[stage] = True
                ch.basic_publish("", stages[i + 1], json.dumps(doc).encode())
                ch.basic_ack(method.delivery_tag)
    stored = [json.loads(b) for b in drain(ch, stages[-1], expect=2)]
    assert sorted(d["id"] for d in stored) == [1, 3]
    assert all(d[stages[0]] and d[stages[1]] for d in stored)
    method, props, body = ch.basic_get(failures, auto_ack=True)
    assert json.loads(body)["id"] == 2
    death = props.headers["x-death"][0]
    assert death["queue"] == stages[0] and death["reason"] == "rejected" and death["count"] == 1
    for q in stages + [failures]:
        ch.queue_delete(q)
    ch.exchange_delete(f"{name}.dlx")
    conn.close()


def test_topic_patterns(amqp_url, name):
    """OpenQuake talk, pattern 3: *.en.# and twitter.#."""
    conn = connect(amqp_url)
    ch = conn.channel()
    x = f"{name}.topics"
    ch.exchange_declare(x, "topic")
    ch.queue_declare(f"{name}.en", exclusive=True)
    ch.queue_declare(f"{name}.tw", exclusive=True)
    ch.queue_bind(f"{name}.en", x, "*.en.#")
    ch.queue_bind(f"{name}.tw", x, "twitter.#")
    for key in ["news.en", "news.en.sport", "news.de", "twitter", "twitter.en.x", "en"]:
        ch.basic_publish(x, key, key.encode())
    assert sorted(drain(ch, f"{name}.en", expect=3)) == [b"news.en", b"news.en.sport", b"twitter.en.x"]
    assert sorted(drain(ch, f"{name}.tw", expect=2)) == [b"twitter", b"twitter.en.x"]
    ch.exchange_delete(x)
    conn.close()


def test_passive_declare_checks_existence(amqp_url, name):
    conn = connect(amqp_url)
    ch = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.queue_declare(name, passive=True)
    assert (e.value.reply_code, e.value.reply_text) == (404, f"NOT_FOUND - no queue '{name}' in vhost '/'")
    ch = conn.channel()
    ch.queue_declare(name)
    ch.basic_publish("", name, b"x")
    ok = ch.queue_declare(name, passive=True)
    assert (ok.method.message_count, ok.method.consumer_count) == (1, 0)
    # Declaring twice is fine (the talk's "declaring queues 2x is fine").
    assert ch.queue_declare(name).method.message_count == 1
    ch.queue_delete(name)
    conn.close()


def test_durable_exchange_queue_and_persistent_messages(amqp_url, name):
    conn = connect(amqp_url)
    ch = conn.channel()
    ch.exchange_declare(name, "direct", durable=True)
    ch.queue_declare(name, durable=True)
    ch.queue_bind(name, name, "k")
    ch.confirm_delivery()
    ch.basic_publish(name, "k", b"keep me", pika.BasicProperties(delivery_mode=2), mandatory=True)
    method, props, body = ch.basic_get(name, auto_ack=True)
    assert (body, props.delivery_mode) == (b"keep me", 2)
    ch.queue_delete(name)
    ch.exchange_delete(name)
    conn.close()


def test_work_queue_with_prefetch_and_acks(amqp_url, name):
    """Competing workers with prefetch 1: a slow worker gets fewer tasks; nothing is lost."""
    conn = connect(amqp_url)
    ch = conn.channel()
    ch.queue_declare(name, durable=True)
    for i in range(40):
        ch.basic_publish("", name, str(i).encode(), pika.BasicProperties(delivery_mode=2))
    done = {"fast": [], "slow": []}

    def worker(kind, delay):
        c = connect(amqp_url)
        wch = c.channel()
        wch.basic_qos(prefetch_count=1)

        def on_task(ch_, method, props, body):
            time.sleep(delay)
            done[kind].append(int(body))
            ch_.basic_ack(method.delivery_tag)

        wch.basic_consume(name, on_task)
        deadline = time.time() + 20
        while sum(len(v) for v in done.values()) < 40 and time.time() < deadline:
            c.process_data_events(time_limit=0.1)
        c.close()

    threads = [threading.Thread(target=worker, args=a) for a in (("fast", 0.0), ("slow", 0.2))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(done["fast"] + done["slow"]) == list(range(40))
    assert len(done["slow"]) < len(done["fast"])
    assert ch.queue_declare(name, durable=True, passive=True).method.message_count == 0
    ch.queue_delete(name)
    conn.close()


def test_unacked_messages_return_redelivered_when_a_consumer_dies(amqp_url, name):
    conn = connect(amqp_url)
    ch = conn.channel()
    ch.queue_declare(name)
    ch.basic_publish("", name, b"task")
    dying = connect(amqp_url)
    dch = dying.channel()
    method, _, body = None, None, None
    deadline = time.time() + 5
    while method is None and time.time() < deadline:
        method, _, body = dch.basic_get(name)
    assert body == b"task" and not method.redelivered
    dying.close()  # without acking
    method, _, body = ch.basic_get(name, auto_ack=True)
    assert body == b"task" and method.redelivered
    ch.queue_delete(name)
    conn.close()


def test_chat_fanout_topic_and_direct(amqp_url, name):
    """The summer camp chat exercise: speak to all, to the interested, to one."""
    conn = connect(amqp_url)
    ch = conn.channel()
    everyone, topics = f"{name}.all", f"{name}.topics"
    ch.exchange_declare(everyone, "fanout")
    ch.exchange_declare(topics, "topic")
    inbox = {}
    for user, interests in [("ann", ["python.#"]), ("bob", ["rust.*"]), ("cid", [])]:
        q = ch.queue_declare("", exclusive=True).method.queue
        inbox[user] = q
        ch.queue_bind(q, everyone)
        for t in interests:
            ch.queue_bind(q, topics, t)
    ch.basic_publish(everyone, "", b"hello all")                  # speak_to_all
    ch.basic_publish(topics, "python.asyncio", b"py news")        # speak_to_all_interested
    ch.basic_publish(topics, "rust.tokio", b"rs news")
    ch.basic_publish("", inbox["cid"], b"psst cid")               # speak_to_one
    assert drain(ch, inbox["ann"], expect=2) == [b"hello all", b"py news"]
    assert drain(ch, inbox["bob"], expect=2) == [b"hello all", b"rs news"]
    assert drain(ch, inbox["cid"], expect=2) == [b"hello all", b"psst cid"]
    ch.exchange_delete(everyone)
    ch.exchange_delete(topics)
    conn.close()


def test_nzpug_exchange_types(amqp_url, name):
    """The nzpug slide's consumer, written out: declare, bind with a key, consume, and the three
    exchange types it lists."""
    conn = connect(amqp_url)
    ch = conn.channel()
    for kind, key, routed, unrouted in [
        ("fanout", "", "anything", None),
        ("direct", "crawl", "crawl", "process"),
        ("topic", "crawl.*", "crawl.web", "crawl.web.deep"),
    ]:
        x = f"{name}.{kind}"
        ch.exchange_declare(exchange=x, exchange_type=kind)
        q = ch.queue_declare(queue=f"{x}.q", exclusive=True).method.queue
        ch.queue_bind(exchange=x, queue=q, routing_key=key)
        ch.basic_publish(x, routed, b"in")
        if unrouted is not None:
            ch.basic_publish(x, unrouted, b"out")
        got = []
        ch.basic_consume(queue=q, on_message_callback=lambda c, m, p, b: got.append(b), auto_ack=True)
        deadline = time.time() + 5
        while not got and time.time() < deadline:
            conn.process_data_events(time_limit=0.1)
        conn.process_data_events(time_limit=0.2)
        assert got == [b"in"], kind
        ch.exchange_delete(x)
    conn.close()


def test_headers_exchange(amqp_url, name):
    conn = connect(amqp_url)
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
    conn.close()


def test_publisher_confirms_and_mandatory_returns(amqp_url, name):
    conn = connect(amqp_url)
    ch = conn.channel()
    ch.queue_declare(name)
    ch.confirm_delivery()
    ch.basic_publish("", name, b"confirmed", mandatory=True)
    with pytest.raises(pika.exceptions.UnroutableError):
        ch.basic_publish("", f"{name}.nowhere", b"lost", mandatory=True)
    assert ch.queue_declare(name, passive=True).method.message_count == 1
    ch.queue_delete(name)
    conn.close()


def test_transactions(amqp_url, name):
    conn = connect(amqp_url)
    ch = conn.channel()
    ch.queue_declare(name)
    ch.tx_select()
    ch.basic_publish("", name, b"a")
    assert ch.queue_declare(name, passive=True).method.message_count == 0
    ch.tx_commit()
    assert ch.queue_declare(name, passive=True).method.message_count == 1
    ch.basic_publish("", name, b"b")
    ch.tx_rollback()
    assert ch.queue_declare(name, passive=True).method.message_count == 1
    method, _, body = ch.basic_get(name)
    ch.basic_ack(method.delivery_tag)
    ch.tx_rollback()
    assert ch.queue_declare(name, passive=True).method.message_count == 0, "get took it; the ack is undone but stays unacked"
    ch.basic_ack(method.delivery_tag)
    ch.tx_commit()
    ch.queue_delete(name)
    conn.close()


def test_kombu_simple_queue_and_consumer(amqp_url, name):
    with kombu.Connection(amqp_url) as conn:
        q = conn.SimpleQueue(name)
        q.put({"hello": "world"})
        msg = q.get(timeout=5)
        assert msg.payload == {"hello": "world"}
        msg.ack()
        q.close()
        exchange = kombu.Exchange(f"{name}.x", "topic", durable=False)
        queue = kombu.Queue(f"{name}.q", exchange, routing_key="a.#", auto_delete=True)
        got = []
        with conn.Consumer(queue, callbacks=[lambda body, m: (got.append(body), m.ack())]):
            conn.Producer().publish({"n": 1}, exchange=exchange, routing_key="a.b", declare=[queue])
            conn.Producer().publish({"n": 2}, exchange=exchange, routing_key="b.a")
            deadline = time.time() + 5
            while not got and time.time() < deadline:
                try:
                    conn.drain_events(timeout=0.2)
                except TimeoutError:
                    pass
        assert got == [{"n": 1}]
        conn.default_channel.queue_delete(name)
