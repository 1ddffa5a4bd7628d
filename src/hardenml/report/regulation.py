"""The regulatory requirements a threat model may name (`[[requirements]]`), as data.

`regulation.json` beside this file is versioned on its own (`version`) and names, for each
requirement, the source it summarises (EU AI Act Article 15 paragraph, NIST AI RMF 1.0
MEASURE subcategory) and where to read it. The summaries are ours, for orientation; the
source is the text that binds.

EU AI Act: https://eur-lex.europa.eu/eli/reg/2024/1689/oj ; NIST AI 100-1:
https://nvlpubs.nist.gov/nistpubs/ai/NIST.AI.100-1.pdf
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import Any

from hardenml.config import ConfigError, ConfigProblem, HardenConfig

DATA_FILE = "regulation.json"


@dataclass(frozen=True)
class Requirement:
    """One requirement of the catalogue: `NIST-MEASURE-2.7`, its section and source."""

    id: str
    section: str
    title: str
    summary: str
    source_name: str
    source_version: str
    source_url: str


@cache
def _load() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        files("hardenml.report").joinpath(DATA_FILE).read_text(encoding="utf-8")
    )
    return data


def catalogue_version() -> str:
    return str(_load()["version"])


def requirement_ids() -> list[str]:
    return sorted(_load()["requirements"])


def requirement(requirement_id: str) -> Requirement:
    data = _load()
    entry = data["requirements"][requirement_id]
    source = data["sources"][entry["source"]]
    return Requirement(
        id=requirement_id,
        section=entry["section"],
        title=entry["title"],
        summary=entry["summary"],
        source_name=source["name"],
        source_version=source["version"],
        source_url=source["url"],
    )


def validate_requirements(config: HardenConfig) -> None:
    """Every `[[requirements]]` id is one the catalogue lists (a usage error naming the key
    and the known ids otherwise), checked where the workspace is opened."""
    known = requirement_ids()
    problems = [
        ConfigProblem(
            f"requirements[{i}].id",
            req.id,
            f"an id of hardenml's requirement catalogue {catalogue_version()}: one of {known}",
            line=config.key_lines.get(f"requirements[{i}].id"),
        )
        for i, req in enumerate(config.requirements)
        if req.id not in known
    ]
    if problems:
        raise ConfigError(config.source, problems)
