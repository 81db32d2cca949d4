"""Hostile job-stream entries: all rejected cleanly, nothing runs, the executor stays up.

Two layers:

- pure: :func:`executor.intake.examine` with real keys against hypothesis-generated
  entries (random field dicts, random JSON signed with the real key, valid signed
  payloads mutated byte by byte, valid jobs with one field replaced by hostile text)
  and hand-made ones (10 MB fields, 10,000-deep nesting, invalid UTF-8, ``../``
  playbook names, ``ansible_*`` extra vars, shell metacharacters, template
  injection). ``examine`` never raises; whatever it accepts obeys every rule.
- live: the same kinds of entries fed to a real ``deployctl executor`` process: each
  is dead-lettered with a reason, the process stays alive with bounded memory, a
  canary directory (holding a playbook a ``../`` name would reach) is untouched, no
  run directory is left, and a valid job afterwards succeeds.

(Flipped byte / dropped signature / moved stream / unknown key, each with a distinct
reason, are covered end to end by ``tests/test_pipeline.py``.)
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from contracts import Result, StreamsConfig, TaskStarted, encode, load_config
from contracts.codec import MAX_JOB_BYTES
from contracts.rules import MAX_DEPTH
from deploystream.embedded_redis import EmbeddedRedis, free_port
from deploystream.keys import ExecutorKeys, OrchestratorKeys, init_keys
from deploystream.sample_service import create_sample_repo
from executor import intake
from executor.settings import ExecutorSettings
from orchestrator.job_builder import build_deploy_job, build_provision_job
from tests.harness import Executors, deployctl, read_events, wait_for_result

ANSIBLE_DIR = Path(__file__).parent / "ansible"
ROOT = Path(__file__).resolve().parent.parent
DEPLOY = "ansible.deploy"
PROVISION = "ansible.provision"
TEN_MB = 10 * 1024 * 1024
DEEP = 10_000
_SHELL_META = re.compile(r"[\s;&|`$<>\\'\"(){}*?!\x00-\x1f\x7f]")
_TEMPLATE = ("{{", "{%", "{#")


# ---------------------------------------------------------------- material


@functools.cache
def material() -> tuple[OrchestratorKeys, ExecutorKeys, ExecutorSettings]:
    """Real keys in a private temp dir (module-wide: hypothesis reuses them)."""
    d = Path(tempfile.mkdtemp(prefix="ds-hostile-keys-"))
    init_keys(d)
    return (
        OrchestratorKeys.load(d),
        ExecutorKeys.load(d),
        ExecutorSettings(name="hostile", project_dir=ANSIBLE_DIR, allow_file_repos=False),
    )


def signed(
    stream: str, payload: bytes, okeys: OrchestratorKeys | None = None
) -> dict[bytes, bytes]:
    okeys = okeys or material()[0]
    return {
        b"job": payload,
        b"sig": okeys.sign(stream, payload).encode(),
        b"kid": okeys.kid.encode(),
    }


def fresh(job: Any) -> Any:
    """As the client submits it: with a signed expiry an hour ahead (this machine's
    clock is the test Redis's)."""
    return msgspec.structs.replace(job, expires_at=time.time() + 3600)


def valid_deploy(okeys: OrchestratorKeys | None = None, **kw: Any) -> dict[str, Any]:
    job = build_deploy_job(
        okeys or material()[0],
        project_name="svc",
        repo="https://github.com/o/r.git",
        playbook="quick",
        secrets={"DB_PASSWORD": "s3cret-value"},
        **kw,
    )
    out: dict[str, Any] = msgspec.to_builtins(fresh(job))
    return out


def valid_provision(okeys: OrchestratorKeys | None = None, **kw: Any) -> dict[str, Any]:
    job = build_provision_job(okeys or material()[0], server_handle="srv-1", playbook="quick", **kw)
    out: dict[str, Any] = msgspec.to_builtins(fresh(job))
    return out


@functools.cache
def base_signed_deploy() -> dict[bytes, bytes]:
    """One valid signed entry, the same for every example (hypothesis needs that)."""
    return signed(DEPLOY, encode(valid_deploy(request_id="base-1")))


def examine(
    stream: str, fields: dict[bytes, bytes]
) -> intake.Accepted | intake.Rejected | intake.NotOffered:
    _, ekeys, cfg = material()
    verdict = intake.examine(stream, fields, ekeys, cfg)
    if isinstance(verdict, intake.Rejected):
        assert verdict.reason, "a rejection always says why"
        assert len(verdict.reason) <= intake.REASON_MAX
    return verdict


def assert_safe(verdict: intake.Accepted | intake.Rejected | intake.NotOffered) -> None:
    """Whatever intake accepts obeys every rule (the property the fuzzing checks)."""
    if isinstance(verdict, intake.NotOffered):  # never run here: handed over
        assert re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,63}", verdict.job.playbook)
        assert not (ANSIBLE_DIR / f"{verdict.job.playbook}.yml").is_file()
        return
    if isinstance(verdict, intake.Rejected):
        return
    job, playbook = verdict.job, verdict.playbook
    assert playbook.parent == ANSIBLE_DIR and playbook.name == f"{job.playbook}.yml"
    assert re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,63}", job.playbook)
    for target in [job.target, *getattr(job, "hosts", [])]:
        assert not _SHELL_META.search(target.host) and not target.host.startswith("-")
    for key in job.extra_vars:
        assert not re.match(r"(?i)ansible_|become|_", key), key
    text = json.dumps(job.extra_vars)
    assert not any(marker in text for marker in _TEMPLATE)
    repo = getattr(job, "repo", None)
    if repo is not None:
        assert not _SHELL_META.search(repo) and not repo.startswith("-")
        assert "@" not in repo.split("/")[2] if repo.startswith("https://") else True
        assert not repo.startswith("file:")  # this executor does not allow file://
    handle = getattr(job, "server_handle", "")
    assert not any(marker in handle for marker in _TEMPLATE)


# ---------------------------------------------------------------- hand-made entries


def deep_json(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


def hand_made(
    stream: str, okeys: OrchestratorKeys | None = None
) -> list[tuple[str, dict[bytes, bytes], str | None]]:
    """(label, fields, request id a rejected result is expected for, or None)."""
    okeys = okeys or material()[0]
    good_payload = encode(valid_deploy(okeys, request_id="hm-good"))

    def sign(payload: bytes) -> dict[bytes, bytes]:
        return signed(stream, payload, okeys)

    def job_with(rid: str, **changes: Any) -> bytes:
        job = (
            valid_deploy(okeys, request_id=rid)
            if stream == DEPLOY
            else valid_provision(okeys, request_id=rid)
        )
        for path, value in changes.items():
            node = job
            *parents, last = path.split("__")
            for p in parents:
                node = node[p]
            node[last] = value
        return json.dumps(job).encode()

    deep_nested_vars = valid_deploy(okeys, request_id="hm-deepvars")
    deep_nested_vars["extra_vars"] = {"x": json.loads(deep_json(MAX_DEPTH + 5))}
    cases: list[tuple[str, dict[bytes, bytes], str | None]] = [
        ("10 MB job field", sign(b"{" + b" " * TEN_MB + b"}"), None),
        (
            "10 MB extra field",
            {**sign(job_with("hm-bigfield", playbook="../quick")), b"x": b"x" * TEN_MB},
            "hm-bigfield",
        ),
        ("10 MB kid", {b"job": good_payload, b"sig": b"A" * 88, b"kid": b"k" * TEN_MB}, "hm-good"),
        (
            "10 MB sig",
            {b"job": good_payload, b"sig": b"A" * TEN_MB, b"kid": okeys.kid.encode()},
            "hm-good",
        ),
        ("10,000-deep nesting, signed", sign(deep_json(DEEP)), None),
        ("10,000-deep nesting, unsigned", {b"job": deep_json(DEEP)}, None),
        ("10,000-deep list", sign(b"[" * DEEP + b"]" * DEEP), None),
        (
            "deep nesting inside extra_vars",
            sign(json.dumps(deep_nested_vars).encode()),
            "hm-deepvars",
        ),
        ("invalid UTF-8 payload", sign(b'{"kind":"deploy","request_id":"\xff\xfe"}'), None),
        (
            "invalid UTF-8 kid",
            {b"job": good_payload, b"sig": b"\xff" * 10, b"kid": b"\xc3\x28"},
            "hm-good",
        ),
        ("../ playbook", sign(job_with("hm-dotdot", playbook="../canary/evil")), "hm-dotdot"),
        ("absolute playbook", sign(job_with("hm-abs", playbook="/etc/passwd")), "hm-abs"),
        ("playbook with newline", sign(job_with("hm-nl", playbook="quick\n")), "hm-nl"),
        (
            "ansible_connection in extra vars (validly signed)",
            sign(job_with("hm-conn", extra_vars={"ansible_connection": "local"})),
            "hm-conn",
        ),
        (
            "ANSIBLE_PYTHON_INTERPRETER in extra vars",
            sign(job_with("hm-interp", extra_vars={"ANSIBLE_PYTHON_INTERPRETER": "/x"})),
            "hm-interp",
        ),
        (
            "become in extra vars",
            sign(job_with("hm-become", extra_vars={"become_user": "root"})),
            "hm-become",
        ),
        (
            "template injection in extra vars",
            signed(
                stream,
                job_with(
                    "hm-tmpl",
                    extra_vars={"git_token": "{{ lookup('pipe', 'touch /tmp/ds-pwned') }}"},
                ),
            ),
            "hm-tmpl",
        ),
        ("shell metacharacters in host", sign(job_with("hm-host", target__host="a;id")), "hm-host"),
        (
            "command substitution in host",
            sign(job_with("hm-host2", target__host="$(id)")),
            "hm-host2",
        ),
        (
            "option-like host",
            sign(job_with("hm-host3", target__host="-oProxyCommand=id")),
            "hm-host3",
        ),
    ]
    if stream == DEPLOY:
        cases += [
            (
                "shell metacharacters in repo",
                sign(job_with("hm-repo", repo="https://x.org/a;id")),
                "hm-repo",
            ),
            (
                "backticks in repo",
                sign(job_with("hm-repo2", repo="https://x.org/`id`")),
                "hm-repo2",
            ),
            ("ext:: transport", sign(job_with("hm-repo3", repo="ext::sh%20-c%20id")), "hm-repo3"),
            (
                "option-like ssh host",
                sign(job_with("hm-repo4", repo="ssh://-oProxyCommand=id/x")),
                "hm-repo4",
            ),
            (
                "credentials in repo",
                sign(job_with("hm-repo5", repo="https://u:p@github.com/o/r")),
                "hm-repo5",
            ),
            ("file:// not allowed", sign(job_with("hm-repo6", repo="file:///etc")), "hm-repo6"),
            ("template in modules", sign(job_with("hm-mod", modules=["{{ 7*7 }}"])), "hm-mod"),
        ]
    else:
        cases += [
            (
                "template injection in server_handle",
                sign(job_with("hm-handle", server_handle="{{ lookup('pipe','id') }}")),
                "hm-handle",
            ),
        ]
    return cases


@pytest.mark.parametrize("stream", [DEPLOY, PROVISION])
def test_hand_made_hostile_entries_are_rejected(stream: str) -> None:
    for label, fields, rid in hand_made(stream):
        verdict = examine(stream, fields)
        assert isinstance(verdict, intake.Rejected), label
        assert verdict.request_id == rid, (label, verdict)


def test_rejection_reasons_name_the_layer() -> None:
    reasons = {label: examine(DEPLOY, f) for label, f, _ in hand_made(DEPLOY)}

    def reason(label: str) -> str:
        verdict = reasons[label]
        assert isinstance(verdict, intake.Rejected)
        return verdict.reason

    assert "too large" in reason("10 MB job field")
    assert reason("10 MB kid").startswith("signature: signed by unknown key")
    assert reason("10 MB sig").startswith("signature:")
    assert reason("10,000-deep nesting, signed").startswith("invalid job:")
    assert reason("10,000-deep nesting, unsigned").startswith("signature: unsigned")
    assert "nested deeper" in reason("deep nesting inside extra_vars")
    assert "ansible_connection" in reason("ansible_connection in extra vars (validly signed)")
    assert "template" in reason("template injection in extra vars")
    assert "credentials" in reason("credentials in repo")


def test_a_valid_job_for_a_playbook_not_here_is_not_offered_not_rejected() -> None:
    """Another executor may have it: intake does not refuse it (executor.handover)."""
    okeys = material()[0]
    job = valid_deploy(okeys, request_id="hm-elsewhere")
    job["playbook"] = "deploy_service"
    verdict = examine(DEPLOY, signed(DEPLOY, json.dumps(job).encode()))
    assert isinstance(verdict, intake.NotOffered)
    assert verdict.job.request_id == "hm-elsewhere"


def test_extra_vars_the_playbook_does_not_declare_are_rejected() -> None:
    okeys = material()[0]

    def verdict(**extra: object) -> intake.Accepted | intake.Rejected | intake.NotOffered:
        job = valid_provision(okeys, request_id="hm-vars")
        job["playbook"] = "sleep"
        job["extra_vars"] = extra
        return examine(PROVISION, signed(PROVISION, json.dumps(job).encode()))

    assert isinstance(verdict(sleep_s=1.5), intake.Accepted)
    for extra, words in (
        ({"app_dir": "/etc"}, "'app_dir' is not declared by playbook 'sleep'"),
        ({"sleep_s": "1; id"}, "sleep_s: expected a number"),
        ({"sleep_s": 99_999}, "above the maximum 3600"),
    ):
        refused = verdict(**extra)
        assert isinstance(refused, intake.Rejected), extra
        assert refused.reason.startswith("rule: ") and words in refused.reason, refused.reason
        assert refused.request_id == "hm-vars"


def test_readable_request_id_survives_anything() -> None:
    for payload in (
        deep_json(DEEP),
        b"[" * DEEP,
        b"\xff\xfe",
        b'{"request_id": "../../etc"}',
        b'{"request_id": "ok-1"}',
        b" " * (MAX_JOB_BYTES + 1),
    ):
        rid = intake.readable_request_id(payload)
        assert rid in (None, "ok-1")


def test_allow_list_refuses_every_path_trick(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "deploy.yml").write_text("- hosts: all\n  tasks: []\n")
    (tmp_path / "evil.yml").write_text("- hosts: all\n  tasks: []\n")
    (project / ".hidden.yml").write_text("- hosts: all\n  tasks: []\n")
    cfg = ExecutorSettings(project_dir=project)
    assert cfg.playbook_path("deploy") == project / "deploy.yml"
    for name in (
        "../evil",
        "..",
        "./deploy",
        "deploy/../deploy",
        "/etc/passwd",
        "deploy.yml",
        "deploy\n",
        "deploy\x00",
        ".hidden",
        "",
        "de ploy",
        "~/deploy",
        "..\\evil",
    ):
        assert cfg.playbook_path(name) is None, name


# ---------------------------------------------------------------- hypothesis (pure)

_FIELD_NAMES = st.sampled_from([b"job", b"sig", b"kid", b"x"]) | st.binary(max_size=16)
random_fields = st.dictionaries(_FIELD_NAMES, st.binary(max_size=512), min_size=1, max_size=5)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=20), inner, max_size=5)
    ),
    max_leaves=30,
)
_HOSTILE_TEXT = st.sampled_from(
    [
        "../quick",
        "quick\n",
        "a;id",
        "$(id)",
        "`id`",
        "-oProxyCommand=id",
        "{{ lookup('pipe','id') }}",
        "{% raw %}",
        "ansible_connection",
        "x\x00y",
        "https://u:p@h/r",
        "file:///etc",
        "ext::sh -c id",
        "..",
        "",
        "a" * 300,
    ]
)
hostile_text = _HOSTILE_TEXT | st.text(max_size=60)
FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)


@FUZZ
@given(stream=st.sampled_from([DEPLOY, PROVISION]), fields=random_fields)
def test_random_field_dicts_are_rejected(stream: str, fields: dict[bytes, bytes]) -> None:
    assert isinstance(examine(stream, fields), intake.Rejected)


@FUZZ
@given(stream=st.sampled_from([DEPLOY, PROVISION]), value=json_values)
def test_random_json_signed_with_the_real_key_never_breaks_intake(
    stream: str, value: object
) -> None:
    verdict = examine(stream, signed(stream, json.dumps(value).encode()))
    assert isinstance(verdict, intake.Rejected)
    assert verdict.reason.startswith("invalid job:")


@FUZZ
@given(data=st.data())
@example(data=None)
def test_mutated_signed_payloads_fail_the_signature(data: st.DataObject | None) -> None:
    fields = base_signed_deploy()
    payload = fields[b"job"]
    if data is None:  # the classic: one flipped bit in the middle
        mutated = bytearray(payload)
        mutated[len(mutated) // 2] ^= 0x01
    else:
        mutated = bytearray(payload)
        kind = data.draw(st.sampled_from(["flip", "delete", "insert", "truncate"]))
        i = data.draw(st.integers(0, len(payload) - 1))
        if kind == "flip":
            mutated[i] ^= data.draw(st.integers(1, 255))
        elif kind == "delete":
            del mutated[i : i + data.draw(st.integers(1, 8))]
        elif kind == "insert":
            mutated[i:i] = data.draw(st.binary(min_size=1, max_size=8))
        else:
            del mutated[i:]
    verdict = examine(DEPLOY, {**fields, b"job": bytes(mutated)})
    assert isinstance(verdict, intake.Rejected)
    assert verdict.reason.startswith("signature: bad signature")


_FIELDS_TO_FUZZ = st.sampled_from(
    [
        "playbook",
        "target.host",
        "target.user",
        "repo",
        "ref",
        "project_id",
        "project_name",
        "health_path",
        "request_id",
        "extra_vars.key",
        "extra_vars.value",
        "env.key",
        "secrets.key",
        "modules",
        "limit",
    ]
)


@FUZZ
@given(field=_FIELDS_TO_FUZZ, text=hostile_text, value=json_values)
def test_signed_jobs_with_hostile_fields_are_accepted_only_when_safe(
    field: str, text: str, value: object
) -> None:
    """A validly signed job (a compromised or careless signer) with one hostile field."""
    job = valid_deploy()
    if field == "target.host":
        job["target"]["host"] = text
    elif field == "target.user":
        job["target"]["user"] = text
    elif field == "extra_vars.key":
        job["extra_vars"] = {text: 1}
    elif field == "extra_vars.value":
        job["extra_vars"] = {"note": value if not isinstance(value, str) else text}
    elif field == "env.key":
        job["env"] = {text: "v"}
    elif field == "secrets.key":
        job["secrets"] = {text: job["secrets"]["DB_PASSWORD"]}
    elif field in ("modules", "limit"):
        job[field] = [text]
    else:
        job[field] = text
    verdict = examine(DEPLOY, signed(DEPLOY, json.dumps(job).encode()))
    assert_safe(verdict)
    if isinstance(verdict, intake.Rejected):
        # "secrets:": a changed project, repo or secret name unbinds the sealed value.
        assert verdict.reason.startswith(("invalid job:", "rule:", "secrets:")), verdict.reason


@FUZZ
@given(handle=hostile_text, extra=st.dictionaries(hostile_text, json_values, max_size=3))
def test_signed_provision_jobs_are_accepted_only_when_safe(
    handle: str, extra: dict[str, object]
) -> None:
    job = valid_provision()
    job["server_handle"] = handle
    job["extra_vars"] = extra
    verdict = examine(PROVISION, signed(PROVISION, json.dumps(job).encode()))
    assert_safe(verdict)


# ---------------------------------------------------------------- live: a real executor


def _vm_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "d"
        for p in sorted(root.rglob("*"))
    }


def _generated_entries(n: int, okeys: OrchestratorKeys) -> list[tuple[str, dict[bytes, bytes]]]:
    """``n`` hypothesis-generated entries (random fields, signed random JSON, mutations)."""
    out: list[tuple[str, dict[bytes, bytes]]] = []
    base = signed(DEPLOY, encode(valid_deploy(okeys)), okeys)

    @settings(max_examples=n, database=None, deadline=None, phases=[Phase.generate])
    @given(
        kind=st.sampled_from(["fields", "json", "mutated"]),
        fields=random_fields,
        value=json_values,
        flip=st.integers(0, 10_000),
    )
    def collect(kind: str, fields: dict[bytes, bytes], value: object, flip: int) -> None:
        stream = DEPLOY if flip % 2 else PROVISION
        if kind == "fields":
            out.append((stream, fields))
        elif kind == "json":
            out.append((stream, signed(stream, json.dumps(value).encode(), okeys)))
        else:
            mutated = bytearray(base[b"job"])
            mutated[flip % len(mutated)] ^= 0x20
            out.append((DEPLOY, {**base, b"job": bytes(mutated)}))

    collect()
    return out


def test_real_executor_rejects_hostile_entries_and_stays_up(
    executors: Executors,
    rclient: redis.Redis,
    config: StreamsConfig,
    keys_dir: Path,
    tmp_path: Path,
) -> None:
    r: Any = rclient  # redis-py's sync types are unions with Awaitable
    # The executor under test verifies with *its* keys: sign with those.
    okeys = OrchestratorKeys.load(keys_dir)
    entries: list[tuple[str, dict[bytes, bytes]]] = []
    expected_rids: set[str] = set()
    for stream in (DEPLOY, PROVISION):
        for _, fields, rid in hand_made(stream, okeys):
            entries.append((stream, fields))
            if rid:
                expected_rids.add(rid)
    entries += _generated_entries(60, okeys)
    valid_job = fresh(
        build_provision_job(okeys, server_handle="after", playbook="quick", request_id="after-1")
    )
    valid = signed(PROVISION, encode(valid_job), okeys)

    canary = tmp_path / "canary"
    canary.mkdir()
    (canary / "evil.yml").write_text(
        "- hosts: all\n  gather_facts: false\n  tasks:\n"
        f"    - ansible.builtin.file: {{path: {canary}/pwned, state: touch}}\n"
    )
    (canary / "keep.txt").write_text("untouched\n")
    before = _tree_digest(canary)

    executors.project_dir = ANSIBLE_DIR
    ex = executors.start("ex-hostile", "--no-file-repos")
    pid = ex.proc.pid
    rss = [_vm_rss_mb(pid)]
    ids = [(stream, r.xadd(stream, fields)) for stream, fields in entries]

    dead_keys = [config.dead_key(DEPLOY), config.dead_key(PROVISION)]
    deadline = time.monotonic() + 180
    while sum(r.xlen(k) for k in dead_keys) < len(ids):
        assert ex.proc.poll() is None, ex.output()[-3000:]
        assert time.monotonic() < deadline, (
            f"{sum(r.xlen(k) for k in dead_keys)} of {len(ids)} dead-lettered",
            ex.output()[-3000:],
        )
        rss.append(_vm_rss_mb(pid))
        time.sleep(0.2)
    rss.append(_vm_rss_mb(pid))

    # Every entry dead-lettered, once, with a reason; nothing left pending.
    dead = {}
    for key in dead_keys:
        for _, fields in r.xrange(key):
            dead[(fields[b"source_stream"].decode(), fields[b"source_id"])] = fields
    for stream, entry_id in ids:
        fields = dead[(stream, entry_id)]
        assert fields[b"reason"] and len(fields[b"reason"]) <= intake.REASON_MAX
        # A field no job could ever have is kept as a fingerprint, not stored again.
        assert all(len(v) < TEN_MB for v in fields.values())
    assert any(b"sha256" in v for f in dead.values() for v in f.values())
    for stream in (DEPLOY, PROVISION):
        assert r.xpending(stream, config.groups.executors)["pending"] == 0
    # A rejected result where a request id was readable.
    for rid in expected_rids:
        events = read_events(rclient, config, rid)
        assert events and isinstance(events[-1], Result) and events[-1].status == "rejected", rid

    # Alive, memory bounded, nothing touched outside its run dirs (none left either).
    assert ex.proc.poll() is None
    assert max(rss) < 400, rss
    assert _tree_digest(canary) == before and not (canary / "pwned").exists()
    assert not Path("/tmp/ds-pwned").exists()
    assert executors.work_left() == []
    assert not executors.apps_root.exists() or list(executors.apps_root.iterdir()) == []

    # And it still works.
    r.xadd(PROVISION, valid)
    events = wait_for_result(rclient, config, "after-1")
    assert isinstance(events[-1], Result) and events[-1].status == "success", events[-1]
    assert ex.proc.poll() is None


def test_valid_entries_pass_intake() -> None:
    """The other side of the properties above: genuine jobs are accepted."""
    for stream, job in ((DEPLOY, valid_deploy()), (PROVISION, valid_provision())):
        verdict = examine(stream, signed(stream, json.dumps(job).encode()))
        assert isinstance(verdict, intake.Accepted), verdict
        assert_safe(verdict)


# ---------------------------------------------------------------- live: a hostile service


def _open_dir(prefix: str) -> Path:
    """A dir others may list: what protects its contents is their own modes."""
    d = Path(tempfile.mkdtemp(prefix=prefix))
    d.chmod(0o755)
    return d


def _hostile_repo(path: Path) -> str:
    create_sample_repo(path)  # a git repo; its app is replaced by the hostile one
    shutil.copy(ANSIBLE_DIR / "files" / "hostile_app.py", path / "app.py")
    subprocess.run(
        ["git", "-c", "user.name=x", "-c", "user.email=x@x", "commit", "-qam", "hostile"],
        cwd=path,
        check=True,
    )
    return path.resolve().as_uri()


@pytest.mark.slow
def test_hostile_service_finds_nothing_and_reaches_nothing(tmp_path: Path) -> None:
    """A deployed app tries everything the first adversarial review did: its own
    environment, the executor's key files, another run's secrets.json and runner
    artifacts (while that run is going), another service's .env, every
    /proc/*/environ (the executor's, its ansible-playbook's), and Redis with any
    credential it finds (and the shipped development ones). It finds none of the
    executor's secrets and every Redis command it tries is refused."""
    assert os.geteuid() == 0, "services run as users of their own only under a root executor"
    from tests.test_security_redis import as_user, render_acl

    passwords = {u: secrets.token_hex(16) for u in ("admin", "orchestrator", "executor")}
    acl = render_acl(tmp_path / "users.acl", passwords)
    keys_dir = _open_dir("ds-keys-")
    work_dir = _open_dir("ds-work-")
    init_keys(keys_dir)
    okeys = OrchestratorKeys.load(keys_dir)
    private_keys = [
        (keys_dir / n).read_text().strip() for n in ("executor.key", "orchestrator.key")
    ]
    token = "ghp_" + secrets.token_hex(18)
    victim_secret = "victim-" + secrets.token_hex(12)
    sleeper_secret = "sleeper-" + secrets.token_hex(12)
    project = tmp_path / "project"  # deploy_service + a playbook that stays running
    project.mkdir()
    for shipped in (ROOT / "executor" / "ansible_project").iterdir():  # playbook, library/
        (project / shipped.name).symlink_to(shipped)
    for name in ("sleep.yml", "sleep.vars.toml"):
        (project / name).symlink_to(ANSIBLE_DIR / name)

    with EmbeddedRedis(extra_args=["--aclfile", str(acl)]) as server:
        admin: Any = as_user(server.port, "admin", passwords["admin"])
        executor_url = f"redis://executor:{passwords['executor']}@127.0.0.1:{server.port}/0"
        group = Executors(redis_url=executor_url, keys_dir=keys_dir, base=tmp_path)
        group.project_dir = project
        cfg = load_config()
        try:
            for stream in cfg.job_streams:  # the admin step (see test_security_redis)
                admin.xgroup_create(stream, cfg.groups.executors, id="0", mkstream=True)
            ex = group.start("ex-hostile-svc", "--work-dir", str(work_dir), "--concurrency", "3")

            def submit(**kw: Any) -> str:
                job = fresh(build_deploy_job(okeys, **kw))
                admin.xadd(DEPLOY, signed(DEPLOY, encode(job), okeys))
                return job.request_id

            def succeeded(rid: str) -> None:
                events = wait_for_result(admin, cfg, rid, timeout=180)
                result = events[-1]
                assert isinstance(result, Result) and result.status == "success", (
                    result,
                    ex.output()[-3000:],
                )

            victim_port, hostile_port = free_port(), free_port()
            succeeded(
                submit(
                    project_name="victim",
                    repo=create_sample_repo(tmp_path / "victim-repo"),
                    service_port=victim_port,
                    secrets={"VICTIM_SECRET": victim_secret},
                )
            )
            probe = {
                "files": [
                    str(keys_dir / "executor.key"),
                    str(keys_dir / "orchestrator.key"),
                    str(group.apps_root / "victim" / ".env"),
                    str(group.apps_root / "victim" / "app.py"),
                    str(ex.log),
                ],
                "dirs": [str(work_dir), str(group.apps_root), str(group.apps_root / "victim")],
                "redis_port": server.port,
            }
            succeeded(
                submit(
                    project_name="hostile",
                    repo=_hostile_repo(tmp_path / "hostile-repo"),
                    service_port=hostile_port,
                    env={"PROBE": json.dumps(probe)},
                    secrets={"HOSTILE_OWN": "its-own-value"},
                )
            )
            # Another project's run, going on while the hostile service looks.
            sleeper = submit(
                project_name="sleeper",
                repo="https://github.com/o/r.git",
                playbook="sleep",
                extra_vars={"sleep_s": 120},
                secrets={"SLEEPER_SECRET": sleeper_secret},
                github_token=token,
            )
            deadline = time.monotonic() + 60
            while not any(
                isinstance(e, TaskStarted) and e.task == "Sleep"
                for e in read_events(admin, cfg, sleeper)
            ):
                assert time.monotonic() < deadline, ex.output()[-3000:]
                time.sleep(0.1)
            assert list(work_dir.glob("run-*/secrets.json")), "the sleeper's run is going on"

            with urllib.request.urlopen(f"http://127.0.0.1:{hostile_port}/probe", timeout=60) as r:
                report = json.loads(r.read())

            cancel = deployctl(
                "cancel",
                sleeper,
                redis_url=f"redis://orchestrator:{passwords['orchestrator']}@127.0.0.1:{server.port}/0",
                keys_dir=keys_dir,
            )
            assert cancel.returncode == 0, cancel.stderr
            wait_for_result(admin, cfg, sleeper)
            groups = admin.xinfo_groups(DEPLOY)
        finally:
            group.stop_all()
            shutil.rmtree(keys_dir, ignore_errors=True)
            shutil.rmtree(work_dir, ignore_errors=True)

    text = json.dumps(report)
    # Not root, not the executor's user; only its own environment.
    assert report["uid"] != 0
    assert set(report["env"]) <= {
        "PATH",
        "HOME",
        "PORT",
        "PWD",
        "SHLVL",
        "_",
        "OLDPWD",
        "LC_CTYPE",
        "PROBE",
        "HOSTILE_OWN",
    }, sorted(report["env"])
    assert report["env"]["HOSTILE_OWN"] == "its-own-value"
    # Nothing of the executor's, of other runs or of other projects, anywhere.
    for secret in (
        victim_secret,
        sleeper_secret,
        token,
        *passwords.values(),
        *private_keys,
    ):
        assert secret not in text, secret
    assert report["credentials_found"] == []
    assert report["foreign_environs"] == {}, list(report["foreign_environs"])
    readable = {p: v for p, v in report["files"].items() if v.startswith("read:")}
    assert readable == {}, list(readable)
    assert isinstance(report["listings"][str(group.apps_root)], str)  # not listable
    assert isinstance(report["listings"][str(group.apps_root / "victim")], str)
    # Redis: the default user may PING only; the shipped passwords are not in use.
    for cred, attempts in report["redis"].items():
        for command, reply in attempts:
            assert reply.startswith(("-NOPERM", "-WRONGPASS", "-NOAUTH", "-ERR")), (
                cred,
                command,
                reply,
            )
    assert [g["name"] for g in groups] == [cfg.groups.executors.encode()]
