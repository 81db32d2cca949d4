"""The executor's playbooks: its allow-list and what each lets a job set.

A project dir holds ``NAME.yml`` playbooks, each with an optional ``NAME.vars.toml``
declaring the extra vars a job may set (:mod:`contracts.playbook_vars`; no file: none).
The catalog is read once, when the executor starts (restart it to pick up a new
playbook): a project dir without playbooks, a declaration that does not decode, or
one without its playbook is a :class:`ProjectDirError`, and the executor refuses to
start rather than take jobs it cannot run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from contracts.playbook_vars import (
    DECLARATION_SUFFIX,
    NO_VARS,
    DeclarationError,
    Offers,
    PlaybookVars,
    parse_declaration,
)
from deploystream.errors import BadInputError

# The same shape contracts.jobs.PlaybookName allows, checked again here: the
# allow-list must hold on its own, whoever built the job.
PLAYBOOK_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}$")


class ProjectDirError(BadInputError):
    """The project dir cannot serve jobs; the message says why."""


@dataclass(frozen=True)
class Playbook:
    name: str
    path: Path
    declared: PlaybookVars


@dataclass(frozen=True)
class Catalog:
    project_dir: Path
    playbooks: dict[str, Playbook]

    @classmethod
    def load(cls, project_dir: Path) -> Catalog:
        try:
            files = sorted(project_dir.iterdir())
        except OSError as exc:
            raise ProjectDirError(f"project dir {project_dir}: {exc.strerror}") from exc
        found: dict[str, Playbook] = {}
        declarations = {
            p.name.removesuffix(DECLARATION_SUFFIX): p
            for p in files
            if p.name.endswith(DECLARATION_SUFFIX) and p.is_file()
        }
        for path in files:
            if path.suffix != ".yml" or not PLAYBOOK_NAME.fullmatch(path.stem):
                continue
            if not path.is_file():
                continue
            declared = NO_VARS
            decl = declarations.pop(path.stem, None)
            if decl is not None:
                try:
                    declared = parse_declaration(decl.read_text(encoding="utf-8"), str(decl))
                except (OSError, UnicodeDecodeError) as exc:
                    raise ProjectDirError(f"{decl}: cannot read: {exc}") from exc
                except DeclarationError as exc:
                    raise ProjectDirError(str(exc)) from exc
            found[path.stem] = Playbook(path.stem, path, declared)
        if declarations:
            orphan = ", ".join(str(p) for p in declarations.values())
            raise ProjectDirError(f"{orphan}: declares vars for a playbook that is not there")
        if not found:
            raise ProjectDirError(
                f"project dir {project_dir} has no playbooks (NAME.yml): "
                "an executor without playbooks cannot run any job"
            )
        return cls(project_dir, found)

    def get(self, name: str) -> Playbook | None:
        """The playbook ``name`` if this executor has it (and its file is still there)."""
        if not PLAYBOOK_NAME.fullmatch(name):
            return None
        playbook = self.playbooks.get(name)
        try:
            return playbook if playbook is not None and playbook.path.is_file() else None
        except OSError:
            return None

    def names(self) -> list[str]:
        return sorted(self.playbooks)

    def offers(self) -> Offers:
        return {name: p.declared for name, p in sorted(self.playbooks.items())}
