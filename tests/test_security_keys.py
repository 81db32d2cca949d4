"""Keys: ``deployctl keys init``, the one-machine path, and split key dirs.

Each side holds only what it must: orchestrators ``orchestrator.key`` +
``executor.pub`` + ``executor-sign.pub``, executors ``executor.key`` +
``executor-sign.key`` + ``orchestrator.pub``. A deploy with a
secret works across such a split, with both dirs read-only, and nothing is created
in them; a missing half is named in a clear error.
"""

from __future__ import annotations

import json
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from contracts import load_config
from deploystream import keys as keymod
from deploystream.cli.app import App
from deploystream.errors import KeyMaterialError
from tests.harness import Executors, deployctl

ANSIBLE_DIR = Path(__file__).parent / "ansible"
ALL = {
    keymod.BOX_PRIVATE,
    keymod.BOX_PUBLIC,
    keymod.SIGN_PRIVATE,
    keymod.SIGN_PUBLIC,
    keymod.EXEC_SIGN_PRIVATE,
    keymod.EXEC_SIGN_PUBLIC,
}
ORCHESTRATOR_SIDE = {keymod.SIGN_PRIVATE, keymod.BOX_PUBLIC, keymod.EXEC_SIGN_PUBLIC}
EXECUTOR_SIDE = {keymod.BOX_PRIVATE, keymod.SIGN_PUBLIC, keymod.EXEC_SIGN_PRIVATE}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in directory.iterdir()}


def test_keys_init_creates_six_files_private_halves_0600_and_is_idempotent(
    tmp_path: Path,
) -> None:
    target = tmp_path / "keys"
    first = deployctl(
        "keys", "init", "--dir", str(target), redis_url="redis://unused", keys_dir=tmp_path / "x"
    )
    assert first.returncode == 0, first.stderr
    assert {p.name for p in target.iterdir()} == ALL
    for name in ALL:
        assert str(target / name) in first.stdout
    assert mode(target) == 0o700
    assert mode(target / keymod.BOX_PRIVATE) == 0o600
    assert mode(target / keymod.SIGN_PRIVATE) == 0o600
    assert mode(target / keymod.BOX_PUBLIC) == 0o644
    assert mode(target / keymod.SIGN_PUBLIC) == 0o644
    assert mode(target / keymod.EXEC_SIGN_PRIVATE) == 0o600
    assert mode(target / keymod.EXEC_SIGN_PUBLIC) == 0o644
    before = snapshot(target)

    again = deployctl(
        "keys", "init", "--dir", str(target), redis_url="redis://unused", keys_dir=tmp_path / "x"
    )
    assert again.returncode == 0, again.stderr
    assert "already present" in again.stdout and "created" not in again.stdout
    assert snapshot(target) == before
    # The pairs match: seal/open and sign/verify round-trip.
    orch, ex = keymod.OrchestratorKeys.load(target), keymod.ExecutorKeys.load(target)
    assert ex.open(orch.seal("v")) == "v"
    ex.verify("s", b"p", orch.sign("s", b"p"), orch.kid)


@pytest.fixture
def split(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """Read-only key dirs holding only each side's files, as two machines would."""
    keymod.init_keys(tmp_path / "all")
    dirs = []
    for side, names in (("orchestrator", ORCHESTRATOR_SIDE), ("executor", EXECUTOR_SIDE)):
        d = tmp_path / side
        d.mkdir(mode=0o700)
        for name in names:
            shutil.copy2(tmp_path / "all" / name, d / name)
        dirs.append(d)
    for d in dirs:
        d.chmod(0o500)
    yield dirs[0], dirs[1]
    for d in dirs:
        d.chmod(0o700)


def test_each_side_loads_only_what_it_holds(split: tuple[Path, Path]) -> None:
    orch_dir, ex_dir = split
    config = load_config()
    orch = App(config=config, keys_dir=orch_dir).orchestrator_keys()
    ex = App(config=config, keys_dir=ex_dir).executor_keys()
    assert ex.open(orch.seal("s3cret")) == "s3cret"
    ex.verify("ansible.deploy", b"job", orch.sign("ansible.deploy", b"job"), orch.kid)
    # Nothing was created on either side (the dirs are read-only anyway).
    assert {p.name for p in orch_dir.iterdir()} == ORCHESTRATOR_SIDE
    assert {p.name for p in ex_dir.iterdir()} == EXECUTOR_SIDE
    # keys init on a split dir keeps the public half it was given.
    assert keymod.init_keys(orch_dir) == [] and keymod.init_keys(ex_dir) == []


def test_a_split_dir_missing_its_half_says_which_file(tmp_path: Path) -> None:
    keymod.init_keys(tmp_path / "all")
    orch_dir = tmp_path / "orch"
    orch_dir.mkdir()
    shutil.copy2(tmp_path / "all" / keymod.SIGN_PRIVATE, orch_dir)
    config = load_config()
    with pytest.raises(KeyMaterialError, match=keymod.BOX_PUBLIC):
        App(config=config, keys_dir=orch_dir).orchestrator_keys()
    ex_dir = tmp_path / "ex"
    ex_dir.mkdir()
    shutil.copy2(tmp_path / "all" / keymod.BOX_PRIVATE, ex_dir)
    with pytest.raises(KeyMaterialError, match="orchestrator verify key"):
        App(config=config, keys_dir=ex_dir).executor_keys()
    # The automatic path never filled a gap with a new (wrong) pair.
    assert {p.name for p in orch_dir.iterdir()} == {keymod.SIGN_PRIVATE}
    assert {p.name for p in ex_dir.iterdir()} == {keymod.BOX_PRIVATE}


@pytest.mark.parametrize("content", ["not base64 at all!", "AAAA", ""])
def test_damaged_key_files_are_a_clear_error(tmp_path: Path, content: str) -> None:
    keymod.init_keys(tmp_path)
    (tmp_path / keymod.BOX_PRIVATE).write_text(content)
    with pytest.raises(KeyMaterialError, match=keymod.BOX_PRIVATE):
        keymod.ExecutorKeys.load(tmp_path)


def test_deploy_across_split_key_dirs(
    split: tuple[Path, Path], redis_url: str, tmp_path: Path
) -> None:
    """Orchestrator side signs and seals with its half; the executor opens with its own."""
    orch_dir, ex_dir = split
    group = Executors(redis_url=redis_url, keys_dir=ex_dir, base=tmp_path, project_dir=ANSIBLE_DIR)
    try:
        group.start("ex-split")
        out = deployctl(
            "deploy",
            "--project",
            "split",
            "--repo",
            "https://example.invalid/split.git",
            "--service-port",
            "8000",
            "--playbook",
            "quick",
            "--secret",
            "TOKEN=split-secret-value",
            "--json",
            redis_url=redis_url,
            keys_dir=orch_dir,
        )
        assert out.returncode == 0, (out.stdout[-2000:], out.stderr[-2000:])
        result = next(
            json.loads(line)
            for line in out.stdout.splitlines()
            if json.loads(line)["type"] == "result"
        )
        assert result["status"] == "success", result
        assert "created keys" not in out.stderr
    finally:
        group.stop_all()
    assert {p.name for p in orch_dir.iterdir()} == ORCHESTRATOR_SIDE
    assert {p.name for p in ex_dir.iterdir()} == EXECUTOR_SIDE


def test_first_use_on_one_machine_creates_keys_and_says_where(
    redis_url: str, tmp_path: Path
) -> None:
    fresh = tmp_path / "fresh-keys"
    out = deployctl(
        "provision",
        "--server",
        "s1",
        "--playbook",
        "quick",
        "--detach",
        redis_url=redis_url,
        keys_dir=fresh,
    )
    assert out.returncode == 0, out.stderr
    assert f"created keys in {fresh}" in out.stderr
    assert {p.name for p in fresh.iterdir()} == ALL
    assert mode(fresh / keymod.BOX_PRIVATE) == 0o600 and mode(fresh / keymod.SIGN_PRIVATE) == 0o600
    again = deployctl(
        "provision",
        "--server",
        "s1",
        "--playbook",
        "quick",
        "--detach",
        redis_url=redis_url,
        keys_dir=fresh,
    )
    assert again.returncode == 0 and "created keys" not in again.stderr


def test_an_unwritable_key_dir_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"  # not a directory: fails even for root
    blocker.write_text("x")
    with pytest.raises(KeyMaterialError, match="cannot create keys"):
        keymod.init_keys(blocker / "keys")
    out = deployctl(
        "keys",
        "init",
        "--dir",
        str(blocker / "keys"),
        redis_url="redis://unused",
        keys_dir=tmp_path,
    )
    assert out.returncode == 2 and "cannot create keys" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
