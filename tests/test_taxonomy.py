"""Every registered threat maps to MITRE ATLAS and OWASP ML Top Ten ids (contract test), and
the data file is consistent: each id it uses is catalogued with a name, a page and a source."""

from __future__ import annotations

import re
from typing import ClassVar

import pytest

from hardenml.threats import available_threats, threat_class
from hardenml.threats.base import FAMILIES, Access, Family, Threat
from hardenml.threats.taxonomy import (
    TaxonomyError,
    mapping_version,
    taxonomy_for,
    taxonomy_sources,
)

ATLAS_ID = re.compile(r"^AML\.T\d{4}(\.\d{3})?$")
OWASP_ML_ID = re.compile(r"^ML(0[1-9]|10):2023$")


@pytest.mark.parametrize("name", available_threats())
def test_every_registered_threat_has_a_mapping(name: str) -> None:
    cls = threat_class(name)
    entry = taxonomy_for(cls)
    assert entry.family == cls.family and entry.access == cls.access
    assert entry.atlas and entry.owasp_ml and entry.rationale
    assert all(ATLAS_ID.match(ref.id) for ref in entry.atlas), entry.atlas
    assert all(OWASP_ML_ID.match(ref.id) for ref in entry.owasp_ml), entry.owasp_ml
    for ref in (*entry.atlas, *entry.owasp_ml):
        assert ref.name and ref.url.startswith("https://"), ref


def _threat(family: Family, access: Access) -> type[Threat]:
    class Probe(Threat):
        def run(self, target, x, y, budget, generator):  # type: ignore[no-untyped-def]
            return x

    Probe.family = family  # type: ignore[misc]
    Probe.access = access  # type: ignore[misc]
    return Probe


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("access", ["gradients", "scores", "labels"])
def test_every_family_and_access_is_mapped(family: Family, access: Access) -> None:
    """A third-party threat of any declared family maps too, whatever access it needs."""
    assert taxonomy_for(_threat(family, access)).atlas


def test_the_sub_technique_follows_the_access_the_attack_needs() -> None:
    white = taxonomy_for(threat_class("tabular"))
    black = taxonomy_for(threat_class("tabular-blackbox"))
    assert white.atlas[0].id == "AML.T0043.000"  # White-Box Optimization
    assert black.atlas[0].id == "AML.T0043.001"  # Black-Box Optimization
    assert taxonomy_for(threat_class("pgd")).atlas[0].id == "AML.T0043.000"
    assert taxonomy_for(threat_class("square")).atlas[0].id == "AML.T0043.001"
    assert "ML01:2023" in taxonomy_for(threat_class("pgd")).ids


def test_an_unmapped_family_names_the_threat_and_the_file() -> None:
    class Stranger(Threat):
        family: ClassVar = "telepathy"

        def run(self, target, x, y, budget, generator):  # type: ignore[no-untyped-def]
            return x

    with pytest.raises(TaxonomyError, match=r"Stranger declares family 'telepathy'.*taxonomy"):
        taxonomy_for(Stranger)


def test_sources_are_pinned_and_versioned() -> None:
    sources = {s.key: s for s in taxonomy_sources()}
    assert sources["atlas"].version == "5.6.0" and "atlas-data" in sources["atlas"].data
    assert sources["owasp_ml"].version == "2023"
    assert re.match(r"^\d{4}\.\d{2}\.\d+$", mapping_version())
