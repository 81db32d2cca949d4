"""Declared extra vars (contracts.playbook_vars) and the executor's catalog of them."""

from __future__ import annotations

from pathlib import Path

import pytest

from contracts import RuleError
from contracts.playbook_vars import (
    DeclarationError,
    PlaybookVars,
    decode_offers,
    encode_offers,
    parse_declaration,
)
from executor.playbooks import Catalog, ProjectDirError
from executor.settings import DEFAULT_PROJECT_DIR

DECL = """
[vars.sleep_s]
type = "float"
min = 0
max = 3600

[vars.color]
type = "str"
choices = ["red", "blue"]

[vars.tag]
type = "str"
pattern = "^[a-z]+$"
max-length = 8

[vars.force]
type = "bool"

[vars.packages]
type = "list"
pattern = "^[a-z0-9-]+$"
max-items = 2

[vars.count]
type = "int"
min = 1
"""


def test_a_declaration_checks_names_types_and_limits() -> None:
    d = parse_declaration(DECL, "x.vars.toml")
    d.check("p", {"sleep_s": 1, "color": "red", "tag": "abc", "force": True, "packages": ["git"]})
    d.check("p", {"sleep_s": 0.5, "count": 3})
    refused = [
        ({"app_dir": "/tmp"}, "extra var 'app_dir' is not declared by playbook 'p' (allowed: "),
        ({"sleep_s": "1"}, "sleep_s: expected a number, got str"),
        ({"sleep_s": True}, "sleep_s: expected a number, got bool"),
        ({"sleep_s": -1}, "below the minimum 0"),
        ({"sleep_s": float("nan")}, "not a finite number"),
        ({"count": 1.5}, "count: expected an int, got float"),
        ({"color": "green"}, "'green' is not one of red, blue"),
        ({"tag": "ABC"}, "does not match ^[a-z]+$"),
        ({"tag": "abcdefghi"}, "longer than 8 characters"),
        ({"force": "yes"}, "force: expected a bool"),
        ({"packages": ["git", "curl", "vim"]}, "more than 2 items"),
        ({"packages": ["rm -rf"]}, "packages[0]"),
        ({"packages": "git"}, "expected a list of strings"),
    ]
    for extra, words in refused:
        with pytest.raises(RuleError) as caught:
            d.check("p", extra)
        assert words in str(caught.value), (extra, str(caught.value))
    # The allowed list names every variable with its type.
    with pytest.raises(RuleError, match=r"sleep_s \(float 0\.\.3600\)"):
        d.check("p", {"nope": 1})


def test_nothing_declared_accepts_nothing() -> None:
    PlaybookVars().check("deploy_service", {})
    with pytest.raises(RuleError, match="it accepts no extra vars"):
        PlaybookVars().check("deploy_service", {"web_cmd": "id"})


def test_command_line_text_becomes_the_declared_type() -> None:
    d = parse_declaration(DECL, "x.vars.toml")
    typed = d.from_texts(
        "p",
        {"sleep_s": "2", "count": "7", "force": "no", "packages": "git, curl", "color": "red"},
        label="--extra-var",
    )
    assert typed == {
        "sleep_s": 2,
        "count": 7,
        "force": False,
        "packages": ["git", "curl"],
        "color": "red",
    }
    assert d.from_texts("p", {"sleep_s": "0.25"}) == {"sleep_s": 0.25}
    for texts, words in (
        ({"count": "seven"}, "--extra-var count: 'seven' is not int"),
        ({"force": "maybe"}, "is not true or false"),
        ({"sleep_s": "1e9"}, "above the maximum"),
        ({"app_dir": "/x"}, "--extra-var 'app_dir' is not declared"),
    ):
        with pytest.raises(RuleError) as caught:
            d.from_texts("p", texts, label="--extra-var")
        assert words in str(caught.value), str(caught.value)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('[vars.x]\ntype = "str"\nmaximum = 3\n', "unknown field `maximum`"),
        ('[vars.x]\ntype = "string"\n', "vars.x: Invalid enum value 'string'"),
        ('[vars.x]\ntype = "str"\nmin = 1\n', "vars.x: min/max apply to int and float"),
        ('[vars.x]\ntype = "int"\nmin = 5\nmax = 1\n', "min is above max"),
        ('[vars.x]\ntype = "str"\npattern = "("\n', "not a valid regular expression"),
        ('[vars.x]\ntype = "int"\nchoices = ["a"]\n', "choices must be a non-empty list of int"),
        ('[vars.apps_root]\ntype = "str"\n', "apps_root: set by the executor"),
        ('[vars.ansible_connection]\ntype = "str"\n', "ansible_connection: set by the executor"),
        ('[vars.deploy_public_key]\ntype = "str"\n', "deploy_public_key: set by the executor"),
        ('[vars.ds_serial]\ntype = "int"\n', "ds_serial: set by the executor"),
        ('[vars."bad-name"]\ntype = "str"\n', "vars"),
        ("[vars.x\n", "not valid TOML"),
        ("[other]\nx = 1\n", "unknown field `other`"),
    ],
)
def test_a_bad_declaration_is_an_error_naming_the_file_and_key(text: str, words: str) -> None:
    with pytest.raises(DeclarationError) as caught:
        parse_declaration(text, "p.vars.toml")
    assert str(caught.value).startswith("p.vars.toml: ")
    assert words in str(caught.value), str(caught.value)


def test_advertised_declarations_round_trip() -> None:
    offers = {"p": parse_declaration(DECL, "x"), "q": PlaybookVars()}
    assert decode_offers(encode_offers(offers)) == offers


def test_builtin_playbooks_declare_what_a_job_may_set() -> None:
    catalog = Catalog.load(DEFAULT_PROJECT_DIR)
    assert catalog.names() == ["deploy_service", "provision_server"]
    deploy = catalog.playbooks["deploy_service"].declared
    # The playbook's internals are not a job's to set (issue 11: each was accepted).
    for name, value in (
        ("app_dir", "/tmp/elsewhere"),
        ("env_file", "/tmp/env"),
        ("web_cmd", "id"),
        ("health_retries", 1),
    ):
        with pytest.raises(RuleError, match=f"'{name}' is not declared"):
            deploy.check("deploy_service", {name: value})
    provision = catalog.playbooks["provision_server"].declared
    provision.check("provision_server", {"provision_version": "2", "create_deploy_user": True})
    with pytest.raises(RuleError, match="'marker_file' is not declared"):
        provision.check("provision_server", {"marker_file": "/etc/passwd"})


def test_the_catalog_refuses_a_project_dir_it_cannot_serve(tmp_path: Path) -> None:
    with pytest.raises(ProjectDirError, match="has no playbooks"):
        Catalog.load(tmp_path)
    (tmp_path / "notes.txt").write_text("not a playbook")
    (tmp_path / ".hidden.yml").write_text("- hosts: all\n  tasks: []\n")
    with pytest.raises(ProjectDirError, match="has no playbooks"):
        Catalog.load(tmp_path)
    (tmp_path / "site.yml").write_text("- hosts: all\n  tasks: []\n")
    (tmp_path / "sitee.vars.toml").write_text('[vars.x]\ntype = "str"\n')
    with pytest.raises(ProjectDirError, match="declares vars for a playbook that is not there"):
        Catalog.load(tmp_path)
    (tmp_path / "sitee.vars.toml").rename(tmp_path / "site.vars.toml")
    catalog = Catalog.load(tmp_path)
    assert catalog.names() == ["site"]
    assert list(catalog.playbooks["site"].declared.vars) == ["x"]
    (tmp_path / "site.vars.toml").write_text('[vars.secrets_file]\ntype = "str"\n')
    with pytest.raises(ProjectDirError, match="secrets_file: set by the executor"):
        Catalog.load(tmp_path)
