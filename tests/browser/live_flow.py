"""Web-STOMP in headless Chromium, against a three-node cluster started with `cluster/local` on free
loopback ports (insecure mode: plain HTTP and WebSocket).

1. The live-flow page (examples/live-flow/index.html, served by node 1's management port at
   /live-flow/) connects to node 2's Web-STOMP endpoint, subscribes to amq.topic and draws the
   messages pika publishes through node 3: checks the status line, the count, one lane per routing
   key, the log (newest first, bodies shown as text, not markup), and saves
   $SCREENSHOT_DIR/live-flow.png (default docs/screenshots/).
2. The real @stomp/stompjs (the npm package, installed by run.sh under
   $CARGO_TARGET_DIR/npm-stomp) in a page served from a local http.server: a StompJs.Client
   subscribes to /queue/<unique> with ack client-individual and acks what pika publishes (the queue
   is empty afterwards, none redelivered), and publishes to /queue/<other> for pika to get.

Run by tests/browser/run.sh. `live_flow.py --external WS_URL AMQP_PORT` runs the same checks against a
broker that already runs (e.g. RabbitMQ with rabbitmq_web_stomp), the page served from the file.
"""
import http.server
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from base64 import b64encode
from pathlib import Path

import pika
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

ROOT = Path(__file__).resolve().parent.parent.parent
SHOTS = Path(os.environ.get("SCREENSHOT_DIR", ROOT / "docs" / "screenshots"))
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
STOMPJS = Path(os.environ.get("STOMPJS_DIR", TARGET / "npm-stomp")) / \
    "node_modules" / "@stomp" / "stompjs" / "bundles" / "stomp.umd.min.js"
# Generous: CI shares two cores with the three nodes, the clients and Chromium.
TIMEOUT = 45
# Routing keys of the live-flow check: three first words, so three groups of lanes.
KEYS = ["orders.new", "orders.paid", "orders.shipped", "logs.error", "logs.info", "payments.eu.card"]


def free_base(sets):
    """A base port B with B+k*1000+n free for n in 1..3 and k below `sets`, away from AMQP's and
    RabbitMQ's usual ports."""
    for _ in range(200):
        base = random.randrange(20000, 59000 - sets * 1000, 10)
        socks = []
        try:
            for p in (base + k * 1000 + n for k in range(sets) for n in (1, 2, 3)):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free ports")


def wait_for(what, check, timeout=TIMEOUT):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as e:  # not ready yet: retry until the deadline
            last = e
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def api(port, path):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    req.add_header("Authorization", "Basic " + b64encode(b"guest:guest").decode())
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def listening(port):
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,900"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"))
    return webdriver.Chrome(service=service, options=options)


class Files:
    """A loopback http.server (a thread) serving a dict of path -> (content type, bytes)."""

    def __init__(self, files):
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                path = self.path.split("?")[0]
                if path not in files:
                    self.send_error(404)
                    return
                kind, body = files[path]
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def js(driver, script, *args):
    return driver.execute_script(script, *args)


def check_live_flow(driver, page, amqp_publish):
    """The live-flow page at `page` (its ws parameter set) draws what pika publishes to amq.topic
    through `amqp_publish`."""
    driver.get(page)
    status = lambda: js(driver, "return document.getElementById('status').innerText")
    wait_for(f"the live-flow page to subscribe (status: {status()!r})",
             lambda: "connected" in status() and
             js(driver, "return document.getElementById('status').dataset.state") == "connected")
    print(f"live flow: {status()}")
    assert js(driver, "return document.getElementById('count').innerText") == "0"

    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", amqp_publish))
    ch = conn.channel()
    ch.confirm_delivery()
    run = uuid.uuid4().hex[:8]
    bodies = []
    for n in range(30):
        key = KEYS[n % len(KEYS)]
        if n == 17:   # markup in a body is shown as text
            body = f"<b class=\"injected\">bold {run}</b> & more"
        else:
            body = json.dumps({"n": n, "run": run, "key": key, "total": round(9.99 * (n + 1), 2)})
        ch.basic_publish("amq.topic", key, body.encode())
        bodies.append((key, body))
        time.sleep(0.04)
    conn.close()

    count = lambda: int(js(driver, "return document.getElementById('count').innerText"))
    wait_for(f"#count to reach 30 (at {count()})", lambda: count() >= 30)
    # Shot while the last dots still travel their lanes.
    SHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SHOTS / "live-flow.png"))
    print(f"screenshot: {SHOTS / 'live-flow.png'}")
    time.sleep(0.5)
    assert count() == 30, f"#count is {count()}, 30 published"

    log = js(driver, """return [...document.querySelectorAll('#log .msg')].map(m => ({
        key: m.querySelector('.key').innerText, body: m.querySelector('.body').innerText}))""")
    assert len(log) == 30, log
    assert [(m["key"], m["body"]) for m in log] == list(reversed(bodies)), \
        f"the log is not the published messages, newest first: {log[:3]}"
    text = js(driver, "return document.getElementById('log').innerText")
    assert bodies[5][1] in text, "a published body is in #log"
    assert js(driver, "return document.querySelector('#log .injected')") is None, \
        "a body's markup is escaped, never rendered"
    assert f"&lt;b class=\"injected\"&gt;bold {run}&lt;/b&gt; &amp; more" in \
        js(driver, "return document.getElementById('log').innerHTML")

    lanes = js(driver, """return [...document.querySelectorAll('#flow-svg g.lane')].map(l => ({
        key: l.dataset.key, group: l.dataset.group, rate: Number(l.dataset.rate)}))""")
    assert sorted(l["key"] for l in lanes) == sorted(KEYS), lanes
    assert all(l["group"] == l["key"].split(".")[0] for l in lanes), lanes
    assert all(l["rate"] > 0 for l in lanes), f"every lane shows a rate: {lanes}"
    groups = js(driver, "return [...document.querySelectorAll('#flow-svg g.group')].map(g => g.dataset.group)")
    assert groups == ["logs", "orders", "payments"], groups
    print(f"live flow: 30 messages drawn in {len(lanes)} lanes, {len(groups)} groups")


STOMPJS_PAGE = """<!doctype html>
<meta charset="utf-8"><title>stompjs</title>
<script src="/stomp.umd.min.js"></script>
<body><p id="state">starting</p><ul id="got"></ul>
<script>
const q = new URLSearchParams(location.search);
window.frames_seen = [];
window.events = [];
const client = new StompJs.Client({
  brokerURL: q.get("ws"),
  connectHeaders: { login: "guest", passcode: "guest", host: "/" },
  reconnectDelay: 0,
  debug: s => events.push(s.slice(0, 300)),
});
const state = s => { document.getElementById("state").textContent = s; events.push("state: " + s); };
client.onConnect = frame => {
  window.connected = frame.headers;
  const receipt = "sub-" + Math.random().toString(36).slice(2);
  client.watchForReceipt(receipt, () => state("subscribed"));
  client.subscribe("/queue/" + q.get("in"), message => {
    window.frames_seen.push(message.headers);
    const li = document.createElement("li");
    li.className = "got";
    li.textContent = message.body;
    document.getElementById("got").appendChild(li);
    message.ack();
  }, { ack: "client-individual", receipt });
  state("connected");
};
client.onStompError = frame => state("error: " + frame.headers.message + " " + frame.body);
client.onWebSocketClose = event => events.push("closed " + event.code + " " + event.reason);
window.sendFromBrowser = (destination, body) => client.publish({ destination, body });
window.stop = () => client.deactivate().then(() => state("stopped"));
client.activate();
</script>
"""


def check_stompjs(driver, ws, amqp):
    """@stomp/stompjs against Web-STOMP at `ws`: acked deliveries from a queue pika feeds (through
    amqp[0]) and a publish to a queue pika gets from (through amqp[1])."""
    assert STOMPJS.is_file(), f"{STOMPJS} is missing (run.sh installs @stomp/stompjs with npm)"
    files = Files({"/": ("text/html; charset=utf-8", STOMPJS_PAGE.encode()),
                   "/stomp.umd.min.js": ("text/javascript", STOMPJS.read_bytes())})
    inbox, outbox = f"stompjs-in-{uuid.uuid4().hex[:8]}", f"stompjs-out-{uuid.uuid4().hex[:8]}"
    feed = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", amqp[0]))
    get = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", amqp[1]))
    try:
        driver.get(f"http://127.0.0.1:{files.port}/?ws={ws}&in={inbox}")
        state = lambda: js(driver, "return document.getElementById('state').innerText")
        events = lambda: "\n".join(js(driver, "return window.events") or [])
        try:
            wait_for(f"stompjs to subscribe (state: {state()!r})", lambda: state() == "subscribed")
        except AssertionError:
            print(events())
            raise
        print(f"stompjs: CONNECTED {js(driver, 'return window.connected')}")

        # pika → the browser: acked one by one, nothing left nor redelivered.
        ch = feed.channel()
        ch.confirm_delivery()
        sent = [f"pika to browser #{n} {uuid.uuid4().hex[:6]}" for n in range(5)]
        for body in sent:
            ch.basic_publish("", inbox, body.encode(), mandatory=True)
        got = lambda: js(driver, "return [...document.querySelectorAll('li.got')].map(l => l.innerText)")
        wait_for(f"the browser to get 5 messages (got {got()})", lambda: len(got()) >= 5)
        assert got() == sent, got()
        headers = js(driver, "return window.frames_seen")
        assert all(h.get("ack") for h in headers), f"MESSAGE frames carry an ack header: {headers}"

        # The browser → pika.
        js(driver, "window.sendFromBrowser(arguments[0], 'from browser')", f"/queue/{outbox}")
        chans = [get.channel()]

        def fetched():   # a get from a queue not there yet closes the channel: use a new one
            if not chans[-1].is_open:
                chans.append(get.channel())
            method, _, body = chans[-1].basic_get(outbox, auto_ack=True)
            return body if method else None
        body = wait_for("pika to get the browser's message", fetched)
        assert body == b"from browser", body

        # Every delivery was acked: once the page has gone, nothing is requeued.
        js(driver, "window.stop()")
        wait_for("stompjs to disconnect", lambda: state() == "stopped", timeout=15)
        time.sleep(1.0)
        gch = get.channel()
        ok = gch.queue_declare(inbox, passive=True)
        assert ok.method.message_count == 0, f"{ok.method.message_count} messages back in {inbox}"
        method, _, redelivered = gch.basic_get(inbox, auto_ack=True)
        assert method is None, f"{inbox} still holds {redelivered!r}"
        errors = [e for e in events().splitlines() if "error" in e.lower()]
        assert not errors, errors
        print(f"stompjs: 5 messages received and acked from /queue/{inbox}; "
              f"'from browser' published to /queue/{outbox} and got with pika")
        gch.queue_delete(inbox)
        gch.queue_delete(outbox)
    finally:
        for c in (feed, get):
            if c.is_open:
                c.close()
        files.close()


def dump_browser_log(driver):
    try:
        for entry in driver.get_log("browser"):
            print(f"browser: {entry['level']} {entry['message']}")
    except Exception:
        pass


def external(ws, amqp_port):
    """The checks against a broker that runs already; the page served from the file."""
    page = (ROOT / "examples" / "live-flow" / "index.html").read_bytes()
    files = Files({"/live-flow/": ("text/html; charset=utf-8", page)})
    driver = browser()
    try:
        check_live_flow(driver, f"http://127.0.0.1:{files.port}/live-flow/?ws={ws}", amqp_port)
        check_stompjs(driver, ws, [amqp_port, amqp_port])
        print("live-flow test: ok")
    except BaseException:
        dump_browser_log(driver)
        raise
    finally:
        driver.quit()
        files.close()


def stop_cluster(local, env, data, ok):
    """Stops the cluster/local nodes; prints the tail of each node's log if the test failed;
    removes their data."""
    subprocess.run(local + ["down"], env=env, stdout=subprocess.DEVNULL)
    if not ok:
        for n in (1, 2, 3):
            log = Path(data) / f"node{n}.log"
            if log.exists():
                print(f"--- node {n} log (tail) ---")
                print("\n".join(log.read_text(errors="replace").splitlines()[-40:]))
    subprocess.run(["rm", "-rf", data])


def main():
    if sys.argv[1:2] == ["--external"]:
        return external(sys.argv[2], int(sys.argv[3]))
    binary = os.environ.get("WARREN_BIN") or str(TARGET / "debug" / "warren")
    base = free_base(8)
    amqp = [base + n for n in (1, 2, 3)]
    mgmt = [base + 2000 + n for n in (1, 2, 3)]
    web_stomp = [base + 5000 + n for n in (1, 2, 3)]
    data = tempfile.mkdtemp(prefix="warren-live-flow-")
    env = dict(os.environ, WARREN_BIN=binary, WARREN_DATA=data, WARREN_INSECURE="1",
               WARREN_AMQP_BASE=str(base), WARREN_GRPC_BASE=str(base + 1000),
               WARREN_MGMT_BASE=str(base + 2000), WARREN_AMQPS_BASE=str(base + 3000),
               WARREN_HTTPS_BASE=str(base + 4000), WARREN_WEB_STOMP_BASE=str(base + 5000),
               WARREN_STOMP_BASE=str(base + 6000), WARREN_STOMP_TLS_BASE=str(base + 7000))
    local = [str(ROOT / "cluster" / "local")]
    subprocess.run(local + ["up"], env=env, check=True, stdout=subprocess.DEVNULL)
    driver = None
    ok = False
    try:
        wait_for("a leader", lambda: all(api(p, "/api/overview")["raft"]["leader"] for p in mgmt))
        wait_for("Web-STOMP listening", lambda: all(listening(p) for p in web_stomp))
        driver = browser()
        ws = f"ws://127.0.0.1:{web_stomp[1]}/ws"
        check_live_flow(driver, f"http://127.0.0.1:{mgmt[0]}/live-flow/?ws={ws}", amqp[2])
        check_stompjs(driver, ws, [amqp[2], amqp[0]])
        ok = True
        print("live-flow test: ok")
    finally:
        if driver:
            if not ok:
                dump_browser_log(driver)
            driver.quit()
        stop_cluster(local, env, data, ok)


if __name__ == "__main__":
    sys.exit(main())
