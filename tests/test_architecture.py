"""The map matches the territory: every file and function docs/architecture.md and docs/adding-a-style.md name
exists, every style has a dialect under the one contract, and the service is the declared Service."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from backends.dialects.base import Dialect
from backends.dialects.registry import DIALECTS
from backends.job import Style
from backends.service import Service

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "docs" / "architecture.md", ROOT / "docs" / "adding-a-style.md"]
STYLE_DIRS = ["a1111", "stability_v1", "stability_v2", "modelslab", "openai"]
SOURCES = "\n".join(p.read_text(encoding="utf-8") for d in ("backends", "webui")
                    for p in (ROOT / d).rglob("*.py"))


def _names(pattern: str) -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        for match in re.finditer(pattern, doc.read_text(encoding="utf-8")):
            found.append((doc.name, match.group(1)))
    return found


@pytest.mark.parametrize("doc,path", _names(r"`((?:backends|webui|tests|docs|bench)/[\w/<>.-]*)`"))
def test_every_path_the_docs_name_exists(doc, path):
    paths = [path.replace("<style>", s) for s in STYLE_DIRS] if "<style>" in path else [path]
    for p in paths:
        if "<" in p:  # another placeholder (<name>, <file>): the folder before it must exist
            p = p.split("<", 1)[0]
        assert (ROOT / p).exists(), f"{doc} names {p}, which does not exist"


@pytest.mark.parametrize("doc,name", sorted(set(_names(r"`(?:[\w.]+\.)?(\w+)\(\)`")) | set(_names(r"`(?:\w+\.)?(\w+)\([^`)]+\)`"))))
def test_every_function_the_docs_name_exists(doc, name):
    assert re.search(rf"\b(def|class) {name}\b", SOURCES), f"{doc} names {name}(), which no module defines"


def test_every_style_has_one_dialect_under_the_one_contract():
    assert set(DIALECTS) == set(Style)
    for style, cls in DIALECTS.items():
        assert issubclass(cls, Dialect) and cls.style == style
        pkg = ROOT / "backends" / "dialects" / style.value
        assert pkg.is_dir(), f"{style} is not a package"
        for module in pkg.glob("*.py"):
            lines = module.read_text(encoding="utf-8").count("\n")
            assert lines <= 500, f"{module.relative_to(ROOT)} has {lines} lines (keep modules under ~500)"


def test_the_real_service_is_the_declared_service(tmp_path):
    from backends.assembly import create_service
    from backends.config import Config

    service = create_service(Config(demo=True, models_dir=tmp_path / "models", outputs_dir=tmp_path / "out"))
    try:
        assert isinstance(service, Service)
    finally:
        service.close()
