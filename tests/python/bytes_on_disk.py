"""Measures what a Warren cluster writes to disk per message (a measurement, not a test: pytest
does not collect it). Figures in docs/architecture.md, "Bytes on disk per message".

Starts N nodes (conftest's harness: free loopback ports, fresh data directories under a temporary
directory), declares a durable queue, publishes persistent messages through one node with
publisher confirms (at most --window unconfirmed; --window 1 waits for each confirm), consumes
and acks every one through another node, waits until every node has applied the whole log, and
prints for every node, before and after each phase: its data directory by kind of file (RocksDB
WAL `*.log`, SST `*.sst`, snapshots, the rest) and what the kernel counted the process writing
(`write_bytes` of /proc/<pid>/io: pages dirtied, so a page re-written after each fsync counts
each time).

    export CARGO_TARGET_DIR=/var/tmp/warren-target
    cargo build -p warren
    bash tests/python/run.sh -k kombu_simple      # creates $CARGO_TARGET_DIR/py-venv if missing
    $CARGO_TARGET_DIR/py-venv/bin/python tests/python/bytes_on_disk.py --nodes 3 --messages 5000 --window 100
"""
import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pika  # noqa: E402

from conftest import start_nodes, stop_nodes, wait_until_serving, warren_binary  # noqa: E402


def disk(node):
    """Bytes in the node's data directory by kind of file, and the process's write_bytes."""
    kinds = {"wal": 0, "sst": 0, "snapshots": 0, "other": 0}
    for path in node.data_dir.rglob("*"):
        try:
            size = path.stat().st_size if path.is_file() else 0
        except FileNotFoundError:  # RocksDB deleted it meanwhile
            continue
        if "snapshots" in path.parts:
            kinds["snapshots"] += size
        elif path.suffix == ".log":
            kinds["wal"] += size
        elif path.suffix == ".sst":
            kinds["sst"] += size
        else:
            kinds["other"] += size
    kinds["dir"] = sum(v for k, v in kinds.items())
    io = dict(line.split(": ") for line in Path(f"/proc/{node.proc.pid}/io").read_text().splitlines())
    kinds["write_bytes"] = int(io["write_bytes"])
    return kinds


def sample(nodes):
    return [disk(n) for n in nodes]


def publish(url, queue, count, body, window):
    """Publishes `count` persistent messages with confirms, at most `window` unconfirmed; returns
    the seconds it took. Fails on a nack."""
    outstanding, state = set(), {"sent": 0, "confirmed": 0, "error": None}
    props = pika.BasicProperties(delivery_mode=2)

    def send(ch):
        while state["sent"] < count and len(outstanding) < window:
            ch.basic_publish("", queue, body, props)
            state["sent"] += 1
            outstanding.add(state["sent"])

    def on_confirm(frame):
        method = frame.method
        done = {t for t in outstanding if t <= method.delivery_tag} if method.multiple else {method.delivery_tag}
        if isinstance(method, pika.spec.Basic.Nack):
            state["error"] = f"nacked: {sorted(done)[:5]}..."
            conn.close()
            return
        outstanding.difference_update(done)
        state["confirmed"] += len(done)
        if state["confirmed"] == count:
            conn.close()
        else:
            send(channel[0])

    channel = []

    def on_channel(ch):
        channel.append(ch)
        ch.confirm_delivery(on_confirm, callback=lambda _frame: send(ch))

    conn = pika.SelectConnection(
        pika.URLParameters(url),
        on_open_callback=lambda c: c.channel(on_open_callback=on_channel),
        on_open_error_callback=lambda _c, e: state.update(error=repr(e)),
        on_close_callback=lambda c, _reason: c.ioloop.stop(),
    )
    started = time.time()
    conn.ioloop.start()
    assert state["error"] is None and state["confirmed"] == count, state
    return time.time() - started


def consume(url, queue, count, prefetch=100):
    """Consumes `count` messages, acking each; returns the seconds it took."""
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    ch.basic_qos(prefetch_count=prefetch)
    got = [0]

    def on_message(ch_, method, _props, _body):
        ch_.basic_ack(method.delivery_tag)
        got[0] += 1

    ch.basic_consume(queue, on_message)
    started = time.time()
    while got[0] < count:
        conn.process_data_events(time_limit=0.1)
    took = time.time() - started
    ch.close()
    conn.close()
    return took


def settle(nodes, timeout=60):
    """Waits until every node has applied the same, last, log index (and a second more, for the
    WAL fsync of the last commit index)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        views = [n.status() for n in nodes]
        applied = {v and v["applied"] for v in views}
        last = {v and v["last_log"] for v in views}
        if len(applied) == 1 and applied == last and None not in applied:
            time.sleep(1)
            return applied.pop()
        time.sleep(0.2)
    raise AssertionError(f"the nodes did not converge: {views}")


def report(title, nodes, before, after, messages):
    print(f"\n{title}")
    print(f"{'node':<10} {'role':<9} {'dir':>11} {'wal':>11} {'sst':>11} {'snapshots':>11} {'other':>9} "
          f"{'write_bytes':>12} {'dir/msg':>9} {'wb/msg':>9}")
    for n, b, a in zip(nodes, before, after):
        d = {k: a[k] - b[k] for k in a}
        role = (n.status() or {}).get("state", "?")
        print(f"node {n.id:<5} {role:<9} {d['dir']:>11} {d['wal']:>11} {d['sst']:>11} {d['snapshots']:>11} "
              f"{d['other']:>9} {d['write_bytes']:>12} {d['dir'] / messages:>9.0f} {d['write_bytes'] / messages:>9.0f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--size", type=int, default=1000, help="body bytes")
    parser.add_argument("--window", type=int, default=100, help="unconfirmed publishes at most")
    parser.add_argument("--keep", action="store_true", help="keep the data directories")
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="warren-disk-")
    nodes = []
    try:
        # With --member even a single node has a gRPC port, for `warren status`.
        nodes = start_nodes(warren_binary(), workdir, args.nodes, members=True)
        wait_until_serving(nodes)
        publisher = nodes[1 % len(nodes)].url
        consumer = nodes[2 % len(nodes)].url
        queue = "bytes-on-disk"
        conn = pika.BlockingConnection(pika.URLParameters(publisher))
        conn.channel().queue_declare(queue, durable=True)
        conn.close()
        settle(nodes)
        idle0 = sample(nodes)
        time.sleep(5)
        start = sample(nodes)
        report("idle, 5 s (bytes)", nodes, idle0, start, 1)  # per message: the same bytes
        took = publish(publisher, queue, args.messages, b"x" * args.size, args.window)
        print(f"\npublished {args.messages} x {args.size} B persistent, window {args.window}, through "
              f"{publisher}: {took:.1f} s ({args.messages / took:.0f} msg/s)")
        settle(nodes)
        published = sample(nodes)
        report("publish (bytes; per message)", nodes, start, published, args.messages)
        took = consume(consumer, queue, args.messages)
        print(f"\nconsumed and acked {args.messages} through {consumer}: {took:.1f} s")
        index = settle(nodes)
        consumed = sample(nodes)
        report("consume + ack (bytes; per message)", nodes, published, consumed, args.messages)
        report("publish + consume + ack (bytes; per message)", nodes, start, consumed, args.messages)
        print(f"\nlog index {index}")
    finally:
        unclean = stop_nodes(nodes)
        for n in unclean:
            print(f"node {n.id} did not stop cleanly:\n{n.log()}", file=sys.stderr)
        if args.keep:
            print(f"data kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
