"""A hostile service (tests/test_security_hostile.py): on GET /probe it tries to
reach everything of the executor's and of other projects, and reports what it got.

Stdlib only (it runs with the system python3 as the service's own user). The probe
targets come from its own environment (PROBE, a JSON object the test passes with
--env): the paths an attacker would guess or read from the executor's environment.
"""

import glob
import json
import os
import re
import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CRED = re.compile(r"rediss?://([^:/@\s'\"]+):([^@\s'\"]+)@")
SHIPPED = [  # the development passwords in deploy/redis/README.md
    ("admin", "deploystream-admin-dev"),
    ("executor", "deploystream-executor-dev"),
    ("orchestrator", "deploystream-orchestrator-dev"),
]


def read(path):
    try:
        with open(path, "rb") as fh:
            data = fh.read(4096)
        return "read: " + data.decode("utf-8", "replace")
    except OSError as exc:
        return f"error: {exc.strerror}"


def listing(path):
    try:
        return sorted(os.listdir(path))
    except OSError as exc:
        return f"error: {exc.strerror}"


def resp(*args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a.encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


def redis_try(port, user, password):
    """AUTH (unless user is None), then the attacks; the first reply line of each."""
    replies = []
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
            commands = [] if user is None else [("AUTH", user, password)]
            commands += [
                ("XGROUP", "CREATE", "ansible.deploy", "hostile", "0", "MKSTREAM"),
                ("XRANGE", "ansible.deploy", "-", "+", "COUNT", "1"),
                ("KEYS", "*"),
            ]
            for cmd in commands:
                s.sendall(resp(*cmd))
                reply = s.recv(65536).decode("utf-8", "replace")
                replies.append([cmd[0] + " " + cmd[1], reply.split("\r\n")[0][:200]])
    except OSError as exc:
        replies.append(["connect", f"error: {exc}"])
    return replies


def probe():
    cfg = json.loads(os.environ.get("PROBE", "{}"))
    report = {"uid": os.getuid(), "env": dict(os.environ), "files": {}, "listings": {}}
    for path in cfg.get("files", []):
        report["files"][path] = read(path)
    for d in cfg.get("dirs", []):
        report["listings"][d] = listing(d)
        for pattern in ("run-*/secrets.json", "run-*/artifacts/run/command", "*/.env", ".env"):
            for path in glob.glob(os.path.join(d, pattern)):
                report["files"][path] = read(path)
    mine = os.getuid()
    foreign = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            owner = os.stat(f"/proc/{pid}").st_uid
        except OSError:
            continue
        got = read(f"/proc/{pid}/environ")
        if owner != mine and got.startswith("read: ") and len(got) > len("read: "):
            foreign[pid] = got.replace("\x00", " ")
    report["foreign_environs"] = foreign
    text = json.dumps(report)
    creds = sorted(set(CRED.findall(text))) + SHIPPED
    report["credentials_found"] = [c for c in creds if c not in SHIPPED]
    port = cfg.get("redis_port")
    attempts = {"(none)": redis_try(port, None, None)}
    for user, password in creds:
        attempts[f"{user}:{password}"] = redis_try(port, user, password)
    report["redis"] = attempts
    return report


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/health":
            body = b"ok"
        elif self.path == "/probe":
            body = json.dumps(probe()).encode()
        else:
            self.send_response(404)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
