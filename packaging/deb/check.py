"""The Debian package, end to end on this machine (issue 21): build it from the binaries already
built (`packaging/deb/build --profile dev --no-build`), install it with `dpkg -i`, check what it
put where (the `warren` system user, /var/lib/warren, /etc/warren/warren.toml, the systemd unit,
the man pages), start the packaged binary as that user with the packaged configuration (its
ports moved to free ones, as flags: other brokers may run here), wait for its systemd readiness
notification (Type=notify) on a socket of this script's, publish and get a message with pika,
stop it with SIGTERM (STOPPING=1, exit 0); then three hosts from the package as
docs/operations.md walks them (`three_hosts`); then purge the package and check that nothing is
left.

Needs root (dpkg). Run by scripts/test with the test venv's Python (pika):
    python packaging/deb/check.py
"""
import gzip
import os
import pwd
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pika

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))


def run(*args, **kwargs):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kwargs)


def installed():
    return subprocess.run(["dpkg", "-s", "warren"], capture_output=True).returncode == 0


def free_ports(n):
    socks, ports = [], []
    try:
        while len(ports) < n:
            s = socket.socket()
            socks.append(s)
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            if not 5600 <= port <= 5700 and not 15670 <= port <= 15680:
                ports.append(port)
    finally:
        for s in socks:
            s.close()
    return ports


def check(condition, what):
    if not condition:
        raise AssertionError(what)


def check_installed_files():
    user = pwd.getpwnam("warren")
    check(user.pw_dir == "/var/lib/warren", f"warren's home: {user.pw_dir}")
    check(user.pw_shell.endswith("nologin"), f"warren's shell: {user.pw_shell}")
    data = os.stat("/var/lib/warren")
    check(data.st_uid == user.pw_uid and stat.S_IMODE(data.st_mode) == 0o750,
          "/var/lib/warren is warren's, 0750")
    config = os.stat("/etc/warren/warren.toml")
    check(config.st_gid == user.pw_gid and stat.S_IMODE(config.st_mode) == 0o640,
          "/etc/warren/warren.toml: root:warren 0640")
    text = Path("/etc/warren/warren.toml").read_text()
    check('data_dir = "/var/lib/warren"' in text, "the packaged config's data_dir")
    unit = Path("/lib/systemd/system/warren.service").read_text()
    for line in ("Type=notify", "User=warren", "Restart=on-failure", "LimitNOFILE=",
                 "ExecStart=/usr/bin/warren --config /etc/warren/warren.toml"):
        check(line in unit, f"the unit has {line}")
    for page in ("warren", "warrenctl", "warren-perf"):
        roff = gzip.decompress(Path(f"/usr/share/man/man1/{page}.1.gz").read_bytes()).decode()
        check(f".TH {page} 1" in roff[:1000], f"{page}.1 is a man page: {roff[:200]!r}")
        check(".SH OPTIONS" in roff, f"{page}.1 documents its flags")
    conffiles = run("dpkg-query", "--showformat=${Conffiles}", "--show", "warren").stdout
    check("/etc/warren/warren.toml" in conffiles, f"conffiles: {conffiles!r}")
    for b in ("warren", "warrenctl", "warren-perf"):
        check(os.access(f"/usr/bin/{b}", os.X_OK), f"/usr/bin/{b}")


def serve_and_use():
    amqp, management = free_ports(2)
    notify_dir = tempfile.mkdtemp(prefix="warren-notify-")
    os.chmod(notify_dir, 0o755)
    notify_path = os.path.join(notify_dir, "notify")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    os.chmod(notify_path, 0o777)
    notify.settimeout(60)
    proc = subprocess.Popen(
        ["runuser", "-u", "warren", "--", "env", f"NOTIFY_SOCKET={notify_path}",
         "/usr/bin/warren", "--config", "/etc/warren/warren.toml", "--bind", "127.0.0.1",
         "--port", str(amqp), "--management-port", str(management), "--stomp-port", "0",
         "--web-stomp-port", "0", "--mqtt-port", "0", "--web-mqtt-port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd="/")
    try:
        ready = notify.recv(4096).decode()
        check("READY=1" in ready.split("\n"), f"readiness notification: {ready!r}")
        # The broker runuser started (other brokers on the machine are not ours to judge).
        owners = run("ps", "-o", "user=", "--ppid", str(proc.pid)).stdout.split()
        check(owners == ["warren"], f"the broker runs as: {owners}")
        params = pika.ConnectionParameters("127.0.0.1", amqp,
                                           credentials=pika.PlainCredentials("guest", "guest"))
        conn = pika.BlockingConnection(params)
        ch = conn.channel()
        ch.confirm_delivery()
        ch.queue_declare("from-the-package", durable=True)
        ch.basic_publish("", "from-the-package", b"installed",
                         pika.BasicProperties(delivery_mode=2))
        _, _, body = ch.basic_get("from-the-package", auto_ack=True)
        check(body == b"installed", f"basic.get: {body!r}")
        conn.close()
        req = urllib.request.Request(f"http://127.0.0.1:{management}/api/overview")
        req.add_header("Authorization", "Basic Z3Vlc3Q6Z3Vlc3Q=")
        with urllib.request.urlopen(req, timeout=10) as resp:
            check(resp.status == 200, f"/api/overview: {resp.status}")
        data = Path("/var/lib/warren/raft")
        check(data.is_dir() and data.stat().st_uid == pwd.getpwnam("warren").pw_uid,
              "the node's data is under /var/lib/warren, warren's")
        pid = int(run("pgrep", "-u", "warren", "-x", "warren").stdout.split()[0])
        os.kill(pid, signal.SIGTERM)
        stopping = notify.recv(4096).decode()
        check("STOPPING=1" in stopping.split("\n"), f"stop notification: {stopping!r}")
        code = proc.wait(60)
        check(code == 0, f"exit status {code} after SIGTERM:\n{proc.stdout.read().decode()}")
    except BaseException:
        if proc.poll() is None:
            proc.kill()
        # runuser forks: killing it leaves the broker, which holds the output pipe open.
        subprocess.run(["pkill", "-KILL", "-u", "warren", "-x", "warren"], capture_output=True)
        out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
        print(f"the packaged node's output:\n{out}", file=sys.stderr)
        raise
    finally:
        notify.close()
        os.unlink(notify_path)
        os.rmdir(notify_dir)


SUBNET = "10.231.99"
HOSTS = (1, 2, 3)


def net_up():
    """Three "hosts" on one bridge: network namespaces wr-host1..3 at SUBNET.1-3, the bridge at
    SUBNET.254 in this namespace (where the operator and the clients are)."""
    net_down()
    run("ip", "link", "add", "wr-br0", "type", "bridge")
    run("ip", "addr", "add", f"{SUBNET}.254/24", "dev", "wr-br0")
    run("ip", "link", "set", "wr-br0", "up")
    for n in HOSTS:
        ns = f"wr-host{n}"
        run("ip", "netns", "add", ns)
        run("ip", "link", "add", f"wr-h{n}", "type", "veth", "peer", "name", "eth0", "netns", ns)
        run("ip", "link", "set", f"wr-h{n}", "master", "wr-br0", "up")
        run("ip", "netns", "exec", ns, "ip", "addr", "add", f"{SUBNET}.{n}/24", "dev", "eth0")
        run("ip", "netns", "exec", ns, "ip", "link", "set", "eth0", "up")
        run("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")


def net_down():
    for n in HOSTS:
        subprocess.run(["ip", "netns", "del", f"wr-host{n}"], capture_output=True)
        subprocess.run(["ip", "link", "del", f"wr-h{n}"], capture_output=True)
    subprocess.run(["ip", "link", "del", "wr-br0"], capture_output=True)


def kill_host(n):
    """kill -9 of every process on host `n` (runuser forks: killing it leaves the broker)."""
    pids = subprocess.run(["ip", "netns", "pids", f"wr-host{n}"], capture_output=True,
                          text=True).stdout.split()
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.time() + 10
    while time.time() < deadline and any(Path(f"/proc/{pid}").exists() for pid in pids):
        time.sleep(0.1)
    return len(pids)


def operator(work, *args):
    return run("/usr/bin/warren", *args, "--grpc", f"{SUBNET}.1:7100", "--certs-dir",
               str(work / "operator")).stdout


def three_hosts():
    """docs/operations.md, "Three hosts from the package", step by step: certificates made with
    the packaged `warren cert` naming each host's address, `cluster/nodeN.toml` with the
    addresses edited as each host's configuration, the packaged binary run as the `warren` user
    on each "host" (a network namespace: one machine, so each host's files sit under its own
    name in /etc/warren and /var/lib/warren), then an operator adds a user over mutual TLS, a
    client publishes through one host and consumes through another (AMQPS, verified against the
    cluster's CA), the leader is killed, and the two left go on."""
    work = Path(tempfile.mkdtemp(prefix="warren-hosts-"))
    procs = {}
    uid = pwd.getpwnam("warren")
    try:
        net_up()
        run("/usr/bin/warren", "cert", "create-ca", "--certs-dir", str(work / "ca"))
        ca = ["--ca-cert", str(work / "ca" / "ca.crt"), "--ca-key", str(work / "ca" / "ca.key")]
        run("/usr/bin/warren", "cert", "create-client", "ops", "--certs-dir",
            str(work / "operator"), *ca)
        for n in HOSTS:
            etc = Path(f"/etc/warren/host{n}")
            run("/usr/bin/warren", "cert", "create-node", str(n), "--host", f"{SUBNET}.{n}",
                "--certs-dir", str(etc / "certs"), *ca)
            config = (ROOT / "cluster" / f"node{n}.toml").read_text()
            config = (config.replace("10.0.0.", f"{SUBNET}.")
                      .replace('"/etc/warren/certs', f'"{etc}/certs')
                      .replace('data_dir = "/var/lib/warren"', f'data_dir = "/var/lib/warren/host{n}"'))
            check(f'data_dir = "/var/lib/warren/host{n}"' in config, "cluster/nodeN.toml's data_dir")
            (etc / "warren.toml").write_text(config)
            for f in [etc, etc / "certs", *(etc / "certs").iterdir(), etc / "warren.toml"]:
                os.chown(f, 0, uid.pw_gid)
                os.chmod(f, 0o750 if f.is_dir() else 0o640)
        for n in HOSTS:
            procs[n] = subprocess.Popen(
                ["ip", "netns", "exec", f"wr-host{n}", "runuser", "-u", "warren", "--",
                 "/usr/bin/warren", "--config", f"/etc/warren/host{n}/warren.toml"],
                stdout=open(work / f"host{n}.log", "wb"), stderr=subprocess.STDOUT, cwd="/")
        deadline = time.time() + 60
        status = ""
        while time.time() < deadline:
            r = subprocess.run(["/usr/bin/warren", "status", "--grpc", f"{SUBNET}.1:7100",
                                "--certs-dir", str(work / "operator")],
                               capture_output=True, text=True)
            status = r.stdout
            lines = status.splitlines()
            header = next((i for i, l in enumerate(lines) if l.startswith("id ")), None)
            roles = [l.split()[1] for l in lines[header + 1:] if len(l.split()) > 1] if header is not None else []
            if r.returncode == 0 and sorted(roles) == ["leader", "voter", "voter"]:
                break
            time.sleep(0.5)
        check(sorted(roles) == ["leader", "voter", "voter"], f"the three hosts formed a cluster:\n{status}")
        leader = int(status.split(", leader ")[1].split(",")[0])
        operator(work, "user", "add", "app", "--password", "app-secret", "--tags", "management")
        operator(work, "permissions", "set", "app", "/", ".*", ".*", ".*")
        creds = pika.PlainCredentials("app", "app-secret")
        tls = __import__("ssl").create_default_context(cafile=str(work / "ca" / "ca.crt"))
        on = lambda n: pika.ConnectionParameters(  # noqa: E731
            f"{SUBNET}.{n}", 5671, credentials=creds,
            ssl_options=pika.SSLOptions(tls, f"{SUBNET}.{n}"))
        others = [n for n in HOSTS if n != leader]
        sent = publish_confirmed(on(others[0]), "orders", 100)
        check(consume(on(others[1]), "orders", 100) == sent, "consumed through another host")
        # The leader's host goes down; the two others go on.
        check(kill_host(leader) >= 1, f"host {leader} ran a process")
        procs[leader].wait(10)
        sent = publish_confirmed(on(others[0]), "orders", 100, retry_for=30)
        check(consume(on(others[1]), "orders", 100) == sent, "consumed after the leader died")
        print(f"three hosts from the package: ok (leader was host {leader})")
    except BaseException:
        for n in HOSTS:
            log = work / f"host{n}.log"
            if log.exists():
                print(f"--- host {n}:\n{log.read_text(errors='replace')[-3000:]}", file=sys.stderr)
        raise
    finally:
        for n, p in procs.items():
            kill_host(n)
            if p.poll() is None:
                p.kill()
            p.wait(10)
        net_down()
        for n in HOSTS:
            subprocess.run(["rm", "-rf", f"/etc/warren/host{n}", f"/var/lib/warren/host{n}"])
        subprocess.run(["rm", "-rf", str(work)])


def publish_confirmed(params, queue, count, retry_for=0):
    """Publishes `count` persistent messages with confirms; returns their bodies. Retries a
    connection refused for up to `retry_for` seconds (a node choosing its new leader)."""
    deadline = time.time() + retry_for
    while True:
        try:
            conn = pika.BlockingConnection(params)
            break
        except pika.exceptions.AMQPConnectionError:
            if time.time() > deadline:
                raise
            time.sleep(0.5)
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare(queue, durable=True)
    bodies = {f"{queue}-{time.time_ns()}-{i}".encode() for i in range(count)}
    for b in sorted(bodies):
        ch.basic_publish("", queue, b, pika.BasicProperties(delivery_mode=2))
    conn.close()
    return bodies


def consume(params, queue, count):
    conn = pika.BlockingConnection(params)
    ch = conn.channel()
    got = set()
    for method, _, body in ch.consume(queue, inactivity_timeout=10):
        if method is None:
            break
        got.add(body)
        ch.basic_ack(method.delivery_tag)
        if len(got) == count:
            break
    ch.cancel()
    conn.close()
    return got


def main():
    if os.geteuid() != 0:
        sys.exit("the package check needs root (dpkg -i)")
    if installed():
        run("dpkg", "--purge", "warren")
    deb = run(str(HERE / "build"), "--profile", "dev", "--no-build", "--out",
              str(TARGET / "deb")).stdout.strip()
    print(f"built {deb} ({os.path.getsize(deb) // 1024} KiB)")
    try:
        run("dpkg", "-i", deb)
        check_installed_files()
        serve_and_use()
        three_hosts()
    finally:
        if installed():
            run("dpkg", "--purge", "warren")
    for gone in ("/usr/bin/warren", "/usr/bin/warrenctl", "/etc/warren", "/var/lib/warren",
                 "/lib/systemd/system/warren.service", "/usr/share/man/man1/warren.1.gz"):
        check(not os.path.exists(gone), f"{gone} is left after purge")
    check(subprocess.run(["getent", "passwd", "warren"], capture_output=True).returncode != 0,
          "the warren user is left after purge")
    print("package test: ok")


if __name__ == "__main__":
    main()
