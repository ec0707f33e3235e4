"""The web console in headless Chromium, against a three-node cluster started with `cluster/local`
on free loopback ports, while pika clients publish and consume through different nodes (the
flow of the seed programs: a topic exchange, two queues, a consumer that acks). The console and
the API are used over HTTPS (the nodes' certificates from `warren cert`, verified against the
cluster's CA by Python; Chromium trusts exactly that server key).

Checks that every page renders real data from the cluster (members and leader, queue depths,
bindings, connections, users, publish and get) and that the live topology view draws the
exchange, its bindings and the queues with a message rate above zero on the edges that carry
traffic. Saves a screenshot of each page under docs/screenshots/ (or $SCREENSHOT_DIR).

Run by tests/browser/run.sh, which installs chromium, chromedriver and the Python packages.
"""
import hashlib
import json
import os
import random
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from base64 import b64encode
from pathlib import Path

import pika
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

ROOT = Path(__file__).resolve().parent.parent.parent
SHOTS = Path(os.environ.get("SCREENSHOT_DIR", ROOT / "docs" / "screenshots"))
# Generous: CI shares two cores with the three nodes, the clients and Chromium.
TIMEOUT = 45


def free_base():
    """A base port B with B+1..B+3 free five times over (AMQP, gRPC, management, AMQPS, HTTPS),
    away from AMQP's and RabbitMQ's usual ports."""
    for _ in range(200):
        base = random.randrange(20000, 35000, 10)
        ports = [base + k * 1000 + n for k in range(5) for n in (1, 2, 3)]
        try:
            socks = []
            for p in ports:
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


# The cluster's CA (set by main once cluster/local made it): the HTTPS API is verified against it.
CA = {}


def api(port, path, method="GET", body=None):
    req = urllib.request.Request(f"https://localhost:{port}{path}", method=method,
                                 data=None if body is None else json.dumps(body).encode())
    req.add_header("Authorization", "Basic " + b64encode(b"guest:guest").decode())
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=10, context=CA["context"]) as r:
        text = r.read()
        return json.loads(text) if text else None


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
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what} (last error: {last!r})")


class Traffic:
    """A publisher through node 1 and an acking consumer through node 3, until stopped."""

    def __init__(self, amqp):
        self.amqp = amqp
        self.stop = threading.Event()
        self.errors = []
        setup = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", amqp[0]))
        ch = setup.channel()
        ch.exchange_declare("shop", "topic", durable=True)
        for q, key in [("emails", "order.*"), ("reports", "#.created"), ("console-check", None)]:
            ch.queue_declare(q, durable=True)
            if key:
                ch.queue_bind(q, "shop", key)
        setup.close()
        self.threads = [threading.Thread(target=self.guard, args=(f,), daemon=True)
                        for f in (self.publish, self.consume)]
        for t in self.threads:
            t.start()

    def guard(self, f):
        try:
            f()
        except Exception as e:
            self.errors.append(e)

    def publish(self):
        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", self.amqp[0]))
        ch = conn.channel()
        ch.confirm_delivery()
        n = 0
        while not self.stop.is_set():
            key = "order.created" if n % 2 == 0 else "order.paid"
            ch.basic_publish("shop", key, json.dumps({"order": n}).encode())
            n += 1
            time.sleep(0.05)
        conn.close()

    def consume(self):
        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", self.amqp[2]))
        ch = conn.channel()
        ch.basic_qos(prefetch_count=10)
        for method, _, _ in ch.consume("emails", inactivity_timeout=0.5):
            if self.stop.is_set():
                break
            if method:
                ch.basic_ack(method.delivery_tag)
        ch.cancel()
        conn.close()

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=10)
        assert not self.errors, f"the traffic failed: {self.errors!r}"


def spki_sha256(cert):
    """base64 of the SHA-256 of a certificate's public key (Chromium's
    --ignore-certificate-errors-spki-list: trust this key, and no other, without its CA)."""
    pub = subprocess.run(["openssl", "x509", "-in", str(cert), "-pubkey", "-noout"],
                         check=True, capture_output=True).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "der"], input=pub,
                         check=True, capture_output=True).stdout
    return b64encode(hashlib.sha256(der).digest()).decode()


def browser(trusted_keys):
    options = webdriver.ChromeOptions()
    options.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,900",
                "--ignore-certificate-errors-spki-list=" + ",".join(trusted_keys)):
        options.add_argument(arg)
    service = Service(os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"))
    return webdriver.Chrome(service=service, options=options)


def main():
    binary = os.environ.get("WARREN_BIN") or str(
        Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "debug" / "warren")
    base = free_base()
    amqp = [base + n for n in (1, 2, 3)]
    mgmt = [base + 4000 + n for n in (1, 2, 3)]
    data = tempfile.mkdtemp(prefix="warren-console-")
    env = dict(os.environ, WARREN_BIN=binary, WARREN_DATA=data, WARREN_AMQP_BASE=str(base),
               WARREN_GRPC_BASE=str(base + 1000), WARREN_MGMT_BASE=str(base + 2000),
               WARREN_AMQPS_BASE=str(base + 3000), WARREN_HTTPS_BASE=str(base + 4000))
    local = [str(ROOT / "cluster" / "local")]
    subprocess.run(local + ["up"], env=env, check=True, stdout=subprocess.DEVNULL)
    certs = Path(data) / "certs"
    CA["context"] = ssl.create_default_context(cafile=str(certs / "ca" / "ca.crt"))
    driver = None
    traffic = None
    try:
        wait_for("a leader", lambda: all(api(p, "/api/overview")["raft"]["leader"] for p in mgmt))
        traffic = Traffic(amqp)
        driver = browser([spki_sha256(certs / f"node{n}" / "node.crt") for n in (1, 2, 3)])
        # The console re-renders every second: elements read between renders go stale.
        wait = WebDriverWait(driver, TIMEOUT, ignored_exceptions=(
            StaleElementReferenceException, NoSuchElementException))

        def text_of(element_id):
            return driver.execute_script(f"return document.getElementById('{element_id}').innerText")
        SHOTS.mkdir(parents=True, exist_ok=True)
        console = f"https://localhost:{mgmt[1]}/"

        def page(name):
            driver.get(console + "#" + name)
            wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-loaded") == name,
                       f"the {name} page did not load")

        def shot(name):
            driver.save_screenshot(str(SHOTS / f"{name}.png"))
            print(f"screenshot: {SHOTS / (name + '.png')}")

        # Log in.
        driver.get(console)
        driver.find_element(By.NAME, "password").send_keys("guest")
        driver.find_element(By.CSS_SELECTOR, "#login-form button").click()
        page("overview")
        assert driver.execute_script("return location.protocol") == "https:", "served over HTTPS"
        # A card per node, each with its resources read from that node (memory, disk, file
        # descriptors) and its Raft position; one leader.
        cards = wait.until(lambda d: d.execute_script(
            "return [...document.querySelectorAll('#nodes-cards .node-card')].map(c => ({role: "
            "c.dataset.role, memory: c.querySelector('[data-field=memory]').innerText, fds: "
            "c.querySelector('[data-field=fds]').innerText, disk: "
            "c.querySelector('[data-field=disk]').innerText}))") or None)
        assert len(cards) == 3, cards
        assert [c["role"] for c in cards].count("leader") == 1, cards
        for c in cards:
            assert c["memory"].split()[0] != "-" and "MB of" in c["memory"], cards
            assert c["fds"].split()[0].isdigit(), cards
            assert "GB" in c["disk"], cards
        leader = api(mgmt[1], "/api/overview")["raft"]["leader"]
        assert leader in text_of("overview-raft")
        wait.until(lambda d: "publish/s\n0\n" not in text_of("overview-totals") + "\n",
                   "the overview shows no publish rate")
        # The charts of the last ten minutes: the publish line has points (the history holds a
        # reading every 5 s) and rises above zero, and so does the ready line of the queues.
        def series_points(chart, name):
            return driver.execute_script(
                "const p = document.querySelector(arguments[0] + ' polyline[data-series=\"' + "
                "arguments[1] + '\"]'); return p ? p.getAttribute('points') : null", chart, name)

        def risen(chart, name):
            points = series_points(f"#{chart}", name)
            if not points:
                return False
            ys = [float(p.split(",")[1]) for p in points.split()]
            # SVG y grows downwards from the x axis, 24 above the chart's bottom (app.js
            # `chart`: the time labels): a point above it is a value above zero.
            axis = driver.execute_script(
                "return Number(document.querySelector(arguments[0] + ' svg').getAttribute('height'))",
                f"#{chart}") - 24
            return len(ys) >= 2 and min(ys) < axis - 0.5
        wait.until(lambda d: risen("chart-rates", "publish"), "the rates chart draws no publish line")
        # Confirms are counted by the node whose client was confirmed (the publisher's, node 1).
        wait.until(lambda d: risen("chart-rates", "confirm"), "the rates chart draws no confirm line")
        # Each node's card charts what its own clients did and its memory: the publisher is on
        # node 1, the consumer on node 3.
        wait.until(lambda d: risen("node-rates-warren-node1", "publish"), "node 1's chart draws no publish line")
        wait.until(lambda d: risen("node-rates-warren-node1", "confirm"), "node 1's chart draws no confirm line")
        wait.until(lambda d: risen("node-rates-warren-node3", "deliver"), "node 3's chart draws no deliver line")
        for n in (1, 2, 3):
            wait.until(lambda d: risen(f"node-memory-warren-node{n}", "memory MiB"),
                       f"node {n}'s memory chart draws nothing")
        # The replicated queues' messages are the leader's to serve: its queued chart rises.
        leader_name = api(mgmt[1], "/api/overview")["raft"]["leader"]
        wait.until(lambda d: risen(f"node-queued-{leader_name.replace('@', '-')}", "ready"),
                   "the leader's queued chart draws no ready line")
        nodes_history = {n["name"]: n for n in api(mgmt[1], "/api/nodes?msg_rates_age=600&msg_rates_incr=5")}
        confirms = nodes_history["warren@node1"]["message_stats"]["confirm_details"]["samples"]
        assert len(confirms) >= 2 and confirms[0]["sample"] > confirms[-1]["sample"], confirms
        assert nodes_history["warren@node3"]["message_stats"]["deliver_get"] > 0, nodes_history["warren@node3"]
        wait.until(lambda d: series_points("#chart-queued", "ready"), "the queued chart draws nothing")
        history = api(mgmt[1], "/api/overview?msg_rates_age=600&msg_rates_incr=5")
        samples = history["message_stats"]["publish_details"]["samples"]
        assert len(samples) >= 2 and samples[0]["timestamp"] > samples[1]["timestamp"], samples[:3]
        assert samples[0]["sample"] >= samples[-1]["sample"], samples
        shot("overview")
        driver.execute_script("document.getElementById('nodes-cards').scrollIntoView()")
        shot("nodes")
        driver.execute_script("window.scrollTo(0, 0)")

        # The live topology: the flow along shop → emails and shop → reports.
        page("topology")
        def graph(d):
            return d.execute_script('''
                const svg = document.getElementById("topology-svg");
                if (!svg) return null;
                return {
                  edges: [...svg.querySelectorAll("g.edge")].map(e => [e.dataset.source, e.dataset.destination, Number(e.dataset.rate)]),
                  queues: Object.fromEntries([...svg.querySelectorAll("g.node-queue")].map(q => [q.dataset.name, Number(q.dataset.messages)])),
                  dots: svg.querySelectorAll("g.edge.active circle.flow").length,
                };''')

        def flowing(d):
            g = graph(d)
            if not g:
                return None
            rates = {(a, b): r for a, b, r in g["edges"]}
            ok = rates.get(("shop", "emails"), 0) > 0 and rates.get(("shop", "reports"), 0) > 0
            return (rates, g) if ok else None
        rates, g = wait.until(flowing, "the topology shows no flow on shop -> emails and shop -> reports")
        assert {"emails", "reports", "console-check"} <= set(g["queues"]), g
        assert g["dots"] > 0, "messages are drawn moving along the active edges"
        first = g["queues"]["reports"]
        wait.until(lambda d: (graph(d) or {"queues": {}})["queues"].get("reports", first) > first,
                   "the topology's depth of 'reports' does not grow")
        print(f"topology rates: {rates}")
        shot("topology")

        page("queues")
        text = wait.until(lambda d: (t := text_of("queues-table")) and "reports" in t and t)
        assert "emails" in text and "warren@node" in text, text
        shot("queues")

        # A queue's page, reached from its link: its figures, its chart, its consumer (the
        # acking one on "emails"), its binding from "shop", and a get that requeues.
        # (Found and clicked in one script: the table is redrawn every second.)
        wait.until(lambda d: d.execute_script(
            "const a = document.querySelector(\"#queues-table a[href='#queue/%2F/emails']\");"
            " if (a) { a.click(); return true; } return false;"), "no link to the emails queue")
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-loaded") == "queue",
                   "the queue page did not load")
        wait.until(lambda d: "emails" in text_of("queue-title"))
        wait.until(lambda d: "order.*" in text_of("queue-bindings") and "shop" in text_of("queue-bindings"),
                   "the queue page shows no binding")
        wait.until(lambda d: len(driver.find_elements(By.CSS_SELECTOR, "#queue-consumers tr")) == 2,
                   "the queue page shows no consumer")
        wait.until(lambda d: risen("chart-queue-rates", "publish"), "the queue's chart draws no publish line")
        assert "durable" in text_of("queue-arguments"), text_of("queue-arguments")
        # Reports has messages waiting (no consumer): get one back, requeued.
        driver.get(console + "#queue/%2F/reports")
        wait.until(lambda d: "reports" in text_of("queue-title"))
        driver.execute_script("document.querySelector(\"button[data-action='queue-get']\").click()")
        wait.until(lambda d: "order." in text_of("queue-got"), "get showed no message")
        shot("queue")

        page("exchanges")
        text = wait.until(lambda d: (t := text_of("bindings-table")) and "order.*" in t and t)
        assert "#.created" in text, text
        shot("exchanges")

        page("connections")
        wait.until(lambda d: text_of("connections-table").count("AMQP 0-9-1") >= 2)
        wait.until(lambda d: "emails" in text_of("consumers-table"))
        shot("connections")

        page("users")
        wait.until(lambda d: "administrator" in text_of("users-table"))
        shot("users")

        page("publish")
        form = driver.find_element(By.ID, "publish-form")
        form.find_element(By.NAME, "routing_key").send_keys("console-check")
        form.find_element(By.NAME, "payload").send_keys("sent from the console")
        form.find_element(By.TAG_NAME, "button").click()
        wait.until(lambda d: "routed" in text_of("publish-result"))
        assert "not routed" not in text_of("publish-result")
        get = driver.find_element(By.ID, "get-form")
        get.find_element(By.NAME, "queue").send_keys("console-check")
        get.find_element(By.TAG_NAME, "button").click()
        wait.until(lambda d: "sent from the console" in text_of("get-result"))
        shot("publish")
        print("console test: ok")
    finally:
        if traffic:
            traffic.finish()
        if driver:
            driver.quit()
        subprocess.run(local + ["down"], env=env, stdout=subprocess.DEVNULL)
        subprocess.run(["rm", "-rf", data])


if __name__ == "__main__":
    sys.exit(main())
