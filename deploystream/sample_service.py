"""A tiny deployable sample service, for tests and ``deployctl demo``.

``create_sample_repo`` makes a local git repository (branch ``main``) holding a
stdlib-only HTTP service plus a ``Procfile``, ready for the ``deploy_service``
playbook (process runtime). ``stop_service`` stops what that playbook started, using
the same pid file (``<app dir>/service.pid``: the pid is also the process group id).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from deploystream.processes import pid_alive

PID_FILE_NAME = "service.pid"
"""Name of the pid file the deploy_service playbook writes in the app directory."""

LOG_FILE_NAME = "service.log"
"""Name of the log file (service stdout/stderr) in the app directory."""

_APP_TEMPLATE = '''\
"""Sample deploystream service: stdlib only."""

import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

GREETING_VAR = {greeting_var!r}
HEALTH_OK = {health_ok!r}


class Handler(BaseHTTPRequestHandler):
    def _send(self, status, body, content_type):
        data = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/health":
            if HEALTH_OK:
                self._send(200, "ok", "text/plain")
            else:
                self._send(500, "unhealthy", "text/plain")
        elif self.path == "/":
            body = json.dumps(
                {{"greeting": os.environ.get(GREETING_VAR), "pid": os.getpid()}}
            )
            self._send(200, body, "application/json")
        else:
            self._send(404, "not found", "text/plain")

    def log_message(self, format, *args):
        pass


def main():
    port = int(os.environ.get("PORT", "8000"))
    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    print(f"listening on {{port}}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
'''


def _git(repo: Path, *args: str) -> None:
    env = {
        **os.environ,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "deploystream",
        "GIT_AUTHOR_EMAIL": "deploystream@localhost",
        "GIT_COMMITTER_NAME": "deploystream",
        "GIT_COMMITTER_EMAIL": "deploystream@localhost",
    }
    subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True)


def create_sample_repo(
    path: Path, *, greeting_var: str = "GREETING", health_ok: bool = True
) -> str:
    """Create a git repo at ``path`` with the sample service; return its ``file://`` URL."""
    if not greeting_var.isidentifier():
        raise ValueError(f"not an environment variable name: {greeting_var!r}")
    path.mkdir(parents=True, exist_ok=True)
    (path / "app.py").write_text(
        _APP_TEMPLATE.format(greeting_var=greeting_var, health_ok=health_ok), encoding="utf-8"
    )
    (path / "Procfile").write_text("web: python3 app.py\n", encoding="utf-8")
    (path / ".gitignore").write_text(
        f".env\n{PID_FILE_NAME}\n{PID_FILE_NAME}.tmp\n{LOG_FILE_NAME}\n__pycache__/\n",
        encoding="utf-8",
    )
    _git(path, "init", "--quiet")
    _git(path, "config", "user.name", "deploystream")
    _git(path, "config", "user.email", "deploystream@localhost")
    _git(path, "config", "commit.gpgsign", "false")
    _git(path, "symbolic-ref", "HEAD", "refs/heads/main")
    _git(path, "add", "app.py", "Procfile", ".gitignore")
    _git(path, "commit", "--quiet", "-m", "sample service")
    return path.resolve().as_uri()


def stop_service(app_dir: Path, *, timeout: float = 5.0) -> None:
    """Stop the service the deploy playbook started in ``app_dir`` (if it is running)."""
    pid_file = app_dir / PID_FILE_NAME
    try:
        pid = int(pid_file.read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return
    if pid <= 1 or not pid_alive(pid):
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        except PermissionError:
            os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                return
            time.sleep(0.05)
