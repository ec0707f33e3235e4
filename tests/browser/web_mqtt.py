"""Web-MQTT in headless Chromium with the real mqtt.js (the npm package `mqtt`, installed by run.sh
under $CARGO_TARGET_DIR/npm-mqtt), against a three-node cluster started with `cluster/local` on
free loopback ports (insecure mode: plain WebSocket).

A page served from a local http.server loads mqtt.js's browser bundle; its client (MQTT 3.1.1)
connects to node 2's ws://.../ws, subscribes to <unique>/+ at QoS 1 and writes what it receives
into a table. Then:
a. pika publishes to amq.topic with routing key <unique>.a through node 3: the page shows it on
   topic <unique>/a, at the subscription's QoS;
b. the page publishes at QoS 1 to <unique>/b (PUBACK awaited): a paho-mqtt client on node 1's MQTT
   port (TCP) receives it;
c. a second browser client speaking MQTT 5 publishes to <unique>/c with user properties: a paho
   MQTT 5 subscriber on node 1 receives them, in order; and the other way, a user property paho
   sends reaches mqtt.js;
d. a retained message the page publishes goes, with the retain flag, to a browser client that
   subscribes later through the same node (RabbitMQ's retained store is per node); the page's own
   subscription got it live, without the flag.
Saves $SCREENSHOT_DIR/web-mqtt.png (default docs/screenshots/) of the page's table.

Run by tests/browser/run.sh. Shares its helpers with live_flow.py.
"""
import os
import queue
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import paho.mqtt.client as paho
import pika
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from live_flow import (ROOT, SHOTS, TARGET, TIMEOUT, Files, api, browser, dump_browser_log,
                       free_base, js, listening, stop_cluster, wait_for)

MQTTJS = Path(os.environ.get("MQTTJS_DIR", TARGET / "npm-mqtt")) / \
    "node_modules" / "mqtt" / "dist" / "mqtt.min.js"

PAGE = """<!doctype html>
<meta charset="utf-8"><title>mqtt.js over Web-MQTT</title>
<style>
  body { font: 14px system-ui, sans-serif; margin: 24px; color: #222; }
  #state { font-weight: 600; } #state[data-state="subscribed"] { color: #16794a; }
  table { border-collapse: collapse; margin-top: 12px; }
  th, td { border: 1px solid #ccc; padding: 4px 10px; text-align: left; }
  th { background: #f2f2f2; } td.props { font-family: monospace; }
</style>
<script src="/mqtt.min.js"></script>
<body><h1>mqtt.js over Warren's Web-MQTT</h1>
<p>Endpoint <code id="endpoint"></code>: <span id="state" data-state="starting">starting</span></p>
<table><thead><tr><th>client</th><th>topic</th><th>QoS</th><th>retain</th><th>payload</th>
<th>user properties</th></tr></thead><tbody id="got"></tbody></table>
<script>
const q = new URLSearchParams(location.search);
const ws = q.get("ws"), prefix = q.get("prefix");
document.getElementById("endpoint").textContent = ws;
window.events = [];
window.clients = {};
const log = s => events.push(String(s).slice(0, 400));
const state = s => {
  const el = document.getElementById("state");
  el.textContent = s; el.dataset.state = s; log("state: " + s);
};
// A client named `name` (client id <prefix>-<name>): resolves with its CONNACK once connected;
// what it receives goes into the table.
window.openClient = (name, protocolVersion) => new Promise((resolve, reject) => {
  const client = mqtt.connect(ws, {
    username: "guest", password: "guest", protocolVersion, clientId: prefix + "-" + name,
    clean: true, reconnectPeriod: 0, connectTimeout: 15000,
  });
  clients[name] = client;
  client.on("packetsend", p => log(name + " -> " + p.cmd));
  client.on("packetreceive", p => log(name + " <- " + p.cmd + " " + JSON.stringify(
    {...p, payload: p.payload == null ? undefined : String(p.payload)})));
  client.on("connect", connack => resolve({sessionPresent: connack.sessionPresent,
    code: connack.reasonCode ?? connack.returnCode, properties: connack.properties || null}));
  client.on("error", e => { log(name + " error: " + e.message); reject(e.message); });
  client.on("close", () => log(name + " closed"));
  client.on("message", (topic, payload, packet) => {
    const row = document.createElement("tr");
    const props = (packet.properties && packet.properties.userProperties) || null;
    Object.assign(row.dataset, {client: name, topic, qos: packet.qos, retain: packet.retain,
      payload: payload.toString(), props: JSON.stringify(props)});
    for (const text of [name, topic, packet.qos, packet.retain, payload.toString(),
                        props ? JSON.stringify(props) : ""]) {
      const cell = document.createElement("td");
      cell.textContent = text;
      row.appendChild(cell);
    }
    row.lastChild.className = "props";
    document.getElementById("got").appendChild(row);
  });
});
window.subscribe = (name, filter, qos) => clients[name].subscribeAsync(filter, {qos})
  .then(granted => granted.map(g => g.qos));
window.publish = (name, topic, payload, options) =>
  clients[name].publishAsync(topic, payload, options).then(() => "sent");
window.closeAll = () => Promise.all(Object.values(clients).map(c => c.endAsync()));

openClient("main", 4)
  .then(() => subscribe("main", prefix + "/+", 1))
  .then(granted => { window.granted = granted; state("subscribed"); })
  .catch(e => state("error: " + e));
</script>
"""


def call(driver, function, *args):
    """Runs window.<function>(...args) in the page and returns what its promise resolves to (an
    AssertionError if it rejects)."""
    result = driver.execute_async_script(f"""
        const done = arguments[arguments.length - 1];
        window.{function}(...[...arguments].slice(0, -1))
            .then(value => done({{value}}), error => done({{error: String(error)}}));""", *args)
    assert "error" not in result, f"{function}{args}: {result['error']}"
    return result.get("value")


def received(driver, client=None, topic=None):
    """The messages in the page's table, [{client, topic, qos, retain, payload, props}]."""
    rows = js(driver, "return [...document.querySelectorAll('#got tr')].map(r => ({...r.dataset}))")
    return [r for r in rows
            if (client is None or r["client"] == client) and (topic is None or r["topic"] == topic)]


class Paho:
    """A paho-mqtt client over TCP with its network thread; what it receives goes to a queue."""

    def __init__(self, port, client_id, version=4):
        self.client_id = client_id
        self.messages = queue.Queue()
        self.acks = queue.Queue()
        v5 = version == 5
        c = self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                      protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
                                      reconnect_on_failure=False)
        c.username_pw_set("guest", "guest")
        c.on_connect = lambda _c, _u, _f, code, _p: self.acks.put(("connack", code.value))
        c.on_subscribe = lambda _c, _u, mid, codes, _p: self.acks.put(
            ("suback", mid, [x.value for x in codes]))
        c.on_message = lambda _c, _u, m: self.messages.put(m)
        c.connect("127.0.0.1", port, 30)
        c.loop_start()
        assert self.acks.get(timeout=TIMEOUT) == ("connack", 0)

    def subscribe(self, topic, qos):
        _, mid = self.client.subscribe(topic, qos)
        return self.acks.get(timeout=TIMEOUT)[1:] == (mid, [qos])

    def publish(self, topic, payload, qos=1, properties=None):
        info = self.client.publish(topic, payload, qos=qos, properties=properties)
        info.wait_for_publish(TIMEOUT)
        assert info.is_published(), f"no PUBACK for {topic}"

    def next(self, what):
        try:
            return self.messages.get(timeout=TIMEOUT)
        except queue.Empty:
            raise AssertionError(f"paho {self.client_id}: no {what}") from None

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def settle(mgmt):
    """Waits until every node has applied what the cluster had committed: a binding made through
    one node routes a publish through another once that node has applied it."""
    target = max(api(p, "/api/overview")["raft"]["committed_index"] for p in mgmt)
    wait_for(f"every node to apply the log up to {target}",
             lambda: all(api(p, "/api/overview")["raft"]["applied_index"] >= target for p in mgmt),
             timeout=10)


def check_web_mqtt(driver, ws, amqp, mqtt, mgmt):
    """mqtt.js against Web-MQTT at `ws` (node 2); pika through amqp (node 3), paho through mqtt
    (node 1)."""
    assert MQTTJS.is_file(), f"{MQTTJS} is missing (run.sh installs mqtt with npm)"
    files = Files({"/": ("text/html; charset=utf-8", PAGE.encode()),
                   "/mqtt.min.js": ("text/javascript", MQTTJS.read_bytes())})
    run = f"webmqtt-{uuid.uuid4().hex[:8]}"
    subscribers = []
    events = lambda: "\n".join(js(driver, "return window.events") or [])
    try:
        driver.set_script_timeout(TIMEOUT)
        driver.get(f"http://127.0.0.1:{files.port}/?ws={ws}&prefix={run}")
        state = lambda: js(driver, "return document.getElementById('state').innerText")
        try:
            wait_for(f"mqtt.js to subscribe (state: {state()!r})", lambda: state() == "subscribed")
        except AssertionError:
            print(events())
            raise
        assert js(driver, "return window.granted") == [1]
        settle(mgmt)

        # a. pika → amq.topic through node 3 → the browser, '.' shown as '/'.
        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", amqp))
        try:
            ch = conn.channel()
            ch.confirm_delivery()
            ch.basic_publish("amq.topic", f"{run}.a", b"from pika", mandatory=True)
        finally:
            conn.close()
        got = wait_for("the browser to show pika's message",
                       lambda: received(driver, "main", f"{run}/a"))
        assert [(m["payload"], m["qos"], m["retain"]) for m in got] == \
            [("from pika", "1", "false")], got
        print(f"web-mqtt: (a) pika's {run}.a shown by mqtt.js as {run}/a")

        # b. The browser publishes at QoS 1; paho gets it over TCP through node 1.
        sub = Paho(mqtt, f"{run}-paho")
        subscribers.append(sub)
        assert sub.subscribe(f"{run}/b", 1)
        settle(mgmt)
        assert call(driver, "publish", "main", f"{run}/b", "from the browser", {"qos": 1}) == "sent"
        m = sub.next(f"message on {run}/b")
        assert (m.topic, m.payload, m.qos, m.retain) == (f"{run}/b", b"from the browser", 1, False)
        wait_for("the browser's own copy", lambda: received(driver, "main", f"{run}/b"))
        print(f"web-mqtt: (b) QoS 1 publish to {run}/b acked, received by paho on node 1")

        # c. MQTT 5 from the browser: user properties both ways with a paho MQTT 5 client.
        sub5 = Paho(mqtt, f"{run}-paho5", version=5)
        subscribers.append(sub5)
        assert sub5.subscribe(f"{run}/c", 1)
        connack = call(driver, "openClient", "v5", 5)
        assert (connack["code"], connack["sessionPresent"]) == (0, False), connack
        assert call(driver, "subscribe", "v5", f"{run}/v5/#", 1) == [1]
        settle(mgmt)
        user = {"origin": "chromium", "run": run, "tag": ["x", "y"]}
        assert call(driver, "publish", "v5", f"{run}/c", "with properties",
                    {"qos": 1, "properties": {"userProperties": user}}) == "sent"
        m = sub5.next(f"MQTT 5 message on {run}/c")
        assert (m.topic, m.payload, m.qos) == (f"{run}/c", b"with properties", 1)
        assert getattr(m.properties, "UserProperty", None) == \
            [("origin", "chromium"), ("run", run), ("tag", "x"), ("tag", "y")], m.properties
        props = Properties(PacketTypes.PUBLISH)
        props.UserProperty = [("from", "paho"), ("n", "1")]
        sub5.publish(f"{run}/v5/in", b"to the browser", properties=props)
        got = wait_for("the MQTT 5 browser client to get paho's message",
                       lambda: received(driver, "v5", f"{run}/v5/in"))
        assert [(m["payload"], m["props"]) for m in got] == \
            [("to the browser", '{"from":"paho","n":"1"}')], got
        print(f"web-mqtt: (c) MQTT 5 user properties browser -> paho {m.properties.UserProperty} "
              f"and paho -> browser {got[0]['props']}")

        # d. Retained, on node 2: live to the page's subscription without the flag, then to a
        # later subscription with it.
        assert call(driver, "publish", "main", f"{run}/r", "kept",
                    {"qos": 1, "retain": True}) == "sent"
        got = wait_for("the live copy of the retained message",
                       lambda: received(driver, "main", f"{run}/r"))
        assert [(m["payload"], m["retain"]) for m in got] == [("kept", "false")], got
        assert call(driver, "openClient", "later", 4)["code"] == 0
        assert call(driver, "subscribe", "later", f"{run}/r", 1) == [1]
        got = wait_for("the retained message for the later subscription",
                       lambda: received(driver, "later", f"{run}/r"))
        assert [(m["payload"], m["qos"], m["retain"]) for m in got] == [("kept", "1", "true")], got
        print(f"web-mqtt: (d) retained {run}/r delivered to a later subscription with retain")

        time.sleep(0.5)   # nothing more arrives: one copy of everything
        rows = received(driver)
        assert sorted((m["client"], m["topic"]) for m in rows) == sorted([
            ("main", f"{run}/a"), ("main", f"{run}/b"), ("main", f"{run}/c"),
            ("main", f"{run}/r"), ("v5", f"{run}/v5/in"), ("later", f"{run}/r")]), rows
        SHOTS.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(SHOTS / "web-mqtt.png"))
        print(f"screenshot: {SHOTS / 'web-mqtt.png'}")

        call(driver, "closeAll")
        errors = [e for e in events().splitlines() if "error" in e.lower()]
        assert not errors, errors
    except BaseException:
        print(events())
        raise
    finally:
        for s in subscribers:
            s.close()
        files.close()


def main():
    binary = os.environ.get("WARREN_BIN") or str(TARGET / "debug" / "warren")
    base = free_base(11)
    amqp = [base + n for n in (1, 2, 3)]
    mgmt = [base + 2000 + n for n in (1, 2, 3)]
    mqtt = [base + 8000 + n for n in (1, 2, 3)]
    web_mqtt = [base + 10000 + n for n in (1, 2, 3)]
    data = tempfile.mkdtemp(prefix="warren-web-mqtt-")
    env = dict(os.environ, WARREN_BIN=binary, WARREN_DATA=data, WARREN_INSECURE="1",
               WARREN_AMQP_BASE=str(base), WARREN_GRPC_BASE=str(base + 1000),
               WARREN_MGMT_BASE=str(base + 2000), WARREN_AMQPS_BASE=str(base + 3000),
               WARREN_HTTPS_BASE=str(base + 4000), WARREN_WEB_STOMP_BASE=str(base + 5000),
               WARREN_STOMP_BASE=str(base + 6000), WARREN_STOMP_TLS_BASE=str(base + 7000),
               WARREN_MQTT_BASE=str(base + 8000), WARREN_MQTT_TLS_BASE=str(base + 9000),
               WARREN_WEB_MQTT_BASE=str(base + 10000))
    local = [str(ROOT / "cluster" / "local")]
    driver = None
    ok = False
    try:
        subprocess.run(local + ["up"], env=env, check=True, stdout=subprocess.DEVNULL)
        wait_for("a leader", lambda: all(api(p, "/api/overview")["raft"]["leader"] for p in mgmt))
        wait_for("MQTT and Web-MQTT listening",
                 lambda: all(listening(p) for p in mqtt + web_mqtt))
        driver = browser()
        check_web_mqtt(driver, f"ws://127.0.0.1:{web_mqtt[1]}/ws", amqp[2], mqtt[0], mgmt)
        ok = True
        print("web-mqtt test: ok")
    finally:
        if driver:
            if not ok:
                dump_browser_log(driver)
            driver.quit()
        stop_cluster(local, env, data, ok)


if __name__ == "__main__":
    sys.exit(main())
