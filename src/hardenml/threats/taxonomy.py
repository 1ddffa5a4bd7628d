"""Threats mapped to MITRE ATLAS techniques and the OWASP Machine Learning Security Top Ten.

The mapping is data, `taxonomy.json` beside this file, versioned on its own (`version`) and
pinned to the taxonomy releases it was read from (`sources`: ATLAS 5.6.0's techniques.yaml
at a fixed commit, OWASP ML Top Ten 2023). It maps each threat family, and where the
technique depends on the access an attack needs (`by_access`), each family and access,
so a third-party threat is mapped by what it declares, never by its name.

ATLAS: https://atlas.mitre.org/ ; OWASP: https://owasp.org/www-project-machine-learning-security-top-10/
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import Any

from hardenml.threats.base import Threat

DATA_FILE = "taxonomy.json"


class TaxonomyError(Exception):
    """The taxonomy data file is inconsistent, or a threat has no mapping in it."""


@dataclass(frozen=True)
class TaxonReference:
    """One entry of a taxonomy: `AML.T0043.000` of MITRE ATLAS, with its name and page."""

    taxonomy: str  # "MITRE ATLAS" or "OWASP Machine Learning Security Top Ten"
    id: str
    name: str
    url: str


@dataclass(frozen=True)
class TaxonomyEntry:
    family: str
    access: str
    atlas: tuple[TaxonReference, ...]
    owasp_ml: tuple[TaxonReference, ...]
    rationale: str
    mapping_version: str

    @property
    def ids(self) -> list[str]:
        return [ref.id for ref in (*self.atlas, *self.owasp_ml)]


@dataclass(frozen=True)
class TaxonomySource:
    key: str  # "atlas" or "owasp_ml"
    name: str
    version: str
    url: str
    data: str


@cache
def _load() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        files("hardenml.threats").joinpath(DATA_FILE).read_text(encoding="utf-8")
    )
    for family, entry in data["families"].items():
        for key in ("atlas", "owasp_ml"):
            listed = list(entry[key])
            if key == "atlas":  # `by_access` refines the ATLAS sub-technique only
                listed += [i for ids in entry.get("by_access", {}).values() for i in ids]
            unknown = sorted(set(listed) - set(data[key]))
            if unknown:
                raise TaxonomyError(
                    f"{DATA_FILE}: family {family!r} names {key} ids {unknown} that the "
                    f"file's `{key}` catalogue does not list"
                )
    return data


def taxonomy_sources() -> list[TaxonomySource]:
    """Where the mappings come from, for SARIF `runs[].taxonomies` and reports."""
    return [TaxonomySource(key, **source) for key, source in _load()["sources"].items()]


def mapping_version() -> str:
    return str(_load()["version"])


def _refs(key: str, ids: list[str]) -> tuple[TaxonReference, ...]:
    data = _load()
    name = data["sources"][key]["name"]
    return tuple(TaxonReference(name, i, data[key][i]["name"], data[key][i]["url"]) for i in ids)


def taxonomy_for(threat_class: type[Threat]) -> TaxonomyEntry:
    """The ATLAS techniques and OWASP ML Top Ten risks a threat stands for, by its declared
    `family` and `access`."""
    data = _load()
    family, access = threat_class.family, threat_class.access
    entry = data["families"].get(family)
    if entry is None:
        raise TaxonomyError(
            f"{threat_class.__name__} declares family {family!r}, which {DATA_FILE} does not "
            f"map; add it under `families` (mapped: {sorted(data['families'])})"
        )
    atlas = list(entry["atlas"])
    by_access = entry.get("by_access")
    if by_access is not None:
        if access not in by_access:
            raise TaxonomyError(
                f"{threat_class.__name__} ({family}) needs access {access!r}, which {DATA_FILE} "
                f"does not map for that family (mapped: {sorted(by_access)})"
            )
        atlas = [*by_access[access], *(i for i in atlas if i not in by_access[access])]
    return TaxonomyEntry(
        family=family,
        access=access,
        atlas=_refs("atlas", atlas),
        owasp_ml=_refs("owasp_ml", list(entry["owasp_ml"])),
        rationale=entry["rationale"],
        mapping_version=str(data["version"]),
    )


def taxon(key: str, taxon_id: str) -> TaxonReference:
    """The catalogued entry `taxon_id` of taxonomy `key` ("atlas" or "owasp_ml")."""
    data = _load()
    if taxon_id not in data[key]:
        raise TaxonomyError(f"{DATA_FILE} lists no {key} id {taxon_id!r}")
    return _refs(key, [taxon_id])[0]


def finding_taxonomy(threat_class: type[Threat] | None) -> dict[str, Any]:
    """The taxonomy ids a finding about a threat carries in the ledger (ids only, plus the
    mapping's version, so a reader can tell which mapping tagged it); empty for a finding
    about no threat (clean accuracy, a behavioural suite)."""
    if threat_class is None:
        return {}
    entry = taxonomy_for(threat_class)
    return {
        "atlas": [ref.id for ref in entry.atlas],
        "owasp_ml": [ref.id for ref in entry.owasp_ml],
        "mapping_version": entry.mapping_version,
    }
