"""Policies, as an application and its operator use them together: the operator sets a policy
through the management API (RabbitMQ's `PUT /api/policies/{vhost}/{name}`), and queues that an
application declares with pika, without arguments, follow it at once; the API shows which
policy a queue follows; deleting the policy lifts it. On one node and on three (the policy set
through one node, the clients on the others)."""
import base64
import json
import time
import urllib.error
import urllib.parse
import urllib.request

import pika

from helpers import delete_queues


def api(base, method, path, body=None):
    """One management API call as guest; (status, parsed JSON or None)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("Authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            text = r.read()
            return r.status, (json.loads(text) if text else None)
    except urllib.error.HTTPError as e:
        text = e.read()
        return e.code, (json.loads(text) if text else None)


def ready(ch, queue):
    return ch.queue_declare(queue, passive=True).method.message_count


def test_a_policy_set_through_the_api_limits_queues_declared_without_arguments(
        connect, name, management_urls):
    mgmt = management_urls[0]
    policy = name + "-cap"
    pattern = "^" + name + r"\."
    status, _ = api(mgmt, "PUT", f"/api/policies/%2F/{policy}",
                    {"pattern": pattern, "definition": {"max-length": 2}, "apply-to": "queues"})
    assert status in (201, 204)
    conn = connect()
    ch = conn.channel()
    ch.confirm_delivery()
    queue = name + ".jobs"
    ch.queue_declare(queue, durable=True)
    for i in range(5):
        ch.basic_publish("", queue, f"m{i}".encode(), pika.BasicProperties(delivery_mode=2))
    assert ready(ch, queue) == 2, "drop-head keeps the newest two"
    method, _props, body = ch.basic_get(queue, auto_ack=True)
    assert body == b"m3"
    # Every node's API says which policy the queue follows.
    for base in management_urls:
        deadline = time.time() + 10
        while True:
            status, q = api(base, "GET", f"/api/queues/%2F/{urllib.parse.quote(queue, safe='')}")
            if status == 200 and q.get("policy") == policy:
                break
            assert time.time() < deadline, f"{base}: {status} {q}"
            time.sleep(0.1)
        assert q["effective_policy_definition"] == {"max-length": 2}
    # A bad definition is refused and changes nothing.
    status, err = api(mgmt, "PUT", f"/api/policies/%2F/{policy}",
                      {"pattern": pattern, "definition": {"max-length": -1}})
    assert status == 400 and err["error"] == "bad_request", err
    status, _ = api(mgmt, "DELETE", f"/api/policies/%2F/{policy}")
    assert status == 204
    for i in range(5, 8):
        ch.basic_publish("", queue, f"m{i}".encode(), pika.BasicProperties(delivery_mode=2))
    assert ready(ch, queue) == 4, "no limit any more"
    delete_queues(conn, queue)
