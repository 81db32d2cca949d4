"""Ansible module of deploy_service: fetch ``ref`` of ``repo`` into ``dest``, the GitHub
token never on the target's disk and never in an argv.

The token arrives as a ``no_log`` module argument (the playbook runs this task
pipelined: the module and its arguments travel on the connection's stdin, not through a
remote temp file) and goes to git only in the child git processes' environment, as
``GIT_CONFIG_COUNT``/``GIT_CONFIG_KEY_n``/``GIT_CONFIG_VALUE_n`` entries: an
``Authorization: Basic base64(x-access-token:TOKEN)`` header scoped to the repo's own
origin (``http."https://HOST[:PORT]/".extraHeader``: git sends it to no other host, e.g.
a submodule's). A run killed mid-fetch leaves nothing with the token behind.

Same semantics as the ``ansible.builtin.git`` task it replaces (``force: true``,
submodules recursive, no host key accepted): ``dest`` becomes a checkout of ``ref``
(branch, tag or commit) of ``repo``, local changes to tracked files discarded, untracked
files (the runtime files) kept. Git never fetches over plain http (``protocol.http.allow
= never``) and never prompts.
"""

from __future__ import annotations

import base64
import os
import subprocess
from typing import Any
from urllib.parse import urlsplit

from ansible.module_utils.basic import AnsibleModule

_TIMEOUT_S = 600


def git_env(repo: str, token: str) -> dict[str, str]:
    """The environment of every git process: the config entries ride in it."""
    config = [("protocol.http.allow", "never")]
    if token and repo.startswith("https://"):
        origin = f"https://{urlsplit(repo).netloc}/"
        basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
        config.append((f"http.{origin}.extraHeader", f"Authorization: Basic {basic}"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_CONFIG_")}
    env["GIT_TERMINAL_PROMPT"] = "0"
    env["GIT_CONFIG_COUNT"] = str(len(config))
    for i, (key, value) in enumerate(config):
        env[f"GIT_CONFIG_KEY_{i}"] = key
        env[f"GIT_CONFIG_VALUE_{i}"] = value
    return env


class _Git:
    def __init__(self, module: AnsibleModule, dest: str, env: dict[str, str]) -> None:
        self.module = module
        self.dest = dest
        self.env = env

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            ["git", *args],
            cwd=self.dest,
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=_TIMEOUT_S,
            check=False,
        )
        if check and done.returncode != 0:
            self.module.fail_json(
                msg=f"git {args[0]} failed: {done.stderr.strip()[-2000:]}",
                rc=done.returncode,
                stderr=done.stderr[-4000:],
            )
        return done

    def commit_of(self, name: str) -> str | None:
        found = self("rev-parse", "--verify", "--quiet", f"{name}^{{commit}}", check=False)
        return found.stdout.strip() if found.returncode == 0 else None


def run(module: AnsibleModule) -> dict[str, Any]:
    repo: str = module.params["repo"]
    dest: str = module.params["dest"]
    ref: str = module.params["version"]
    if ref.startswith("-"):  # never an option of git's
        module.fail_json(msg=f"version {ref!r} is no branch, tag or commit name")
    git = _Git(module, dest, git_env(repo, module.params["token"] or ""))

    os.makedirs(dest, exist_ok=True)
    before: str | None = None
    if os.path.isdir(os.path.join(dest, ".git")):
        before = git.commit_of("HEAD")
    else:
        git("init", "-q")
    if git("remote", "get-url", "origin", check=False).returncode == 0:
        git("remote", "set-url", "origin", repo)
    else:
        git("remote", "add", "origin", repo)
    git("fetch", "--quiet", "--force", "--tags", "origin", "+refs/heads/*:refs/remotes/origin/*")
    after = (
        git.commit_of(f"refs/remotes/origin/{ref}")
        or git.commit_of(f"refs/tags/{ref}")
        or git.commit_of(ref)
    )
    # a commit no branch or tag reaches: ask for it by name
    if after is None and git("fetch", "--quiet", "origin", ref, check=False).returncode == 0:
        after = git.commit_of("FETCH_HEAD")
    if after is None:
        module.fail_json(msg=f"version {ref!r} is no branch, tag or commit of {repo}")
    git("checkout", "--quiet", "--force", "--detach", str(after))
    git("submodule", "sync", "--recursive")
    git("submodule", "update", "--init", "--recursive", "--force")
    return {"changed": before != after, "before": before, "after": after}


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "repo": {"type": "str", "required": True},
            "dest": {"type": "path", "required": True},
            "version": {"type": "str", "required": True},
            "token": {"type": "str", "default": "", "no_log": True},
        },
        supports_check_mode=False,
    )
    module.exit_json(**run(module))


if __name__ == "__main__":
    main()
