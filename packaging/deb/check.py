"""The Debian package, end to end on this machine (issue 21): build it from the binaries already
built (`packaging/deb/build --profile dev --no-build`), install it with `dpkg -i`, check what it
put where (the `warren` system user, /var/lib/warren, /etc/warren/warren.toml, the systemd unit,
the man pages), start the packaged binary as that user with the packaged configuration (its
ports moved to free ones, as flags: other brokers may run here), wait for its systemd readiness
notification (Type=notify) on a socket of this script's, publish and get a message with pika,
stop it with SIGTERM (STOPPING=1, exit 0), then purge the package and check that nothing is left.

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
        owners = run("ps", "-o", "user=", "-C", "warren").stdout.split()
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
        out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
        print(f"the packaged node's output:\n{out}", file=sys.stderr)
        raise
    finally:
        notify.close()
        os.unlink(notify_path)
        os.rmdir(notify_dir)


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
