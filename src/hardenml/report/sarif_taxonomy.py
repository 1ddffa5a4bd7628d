"""MITRE ATLAS and the OWASP ML Top Ten as SARIF taxonomies, and rules related to their taxa.

SARIF 2.1.0 section 3.14.8 (`run.taxonomies`: toolComponent objects whose `taxa` are
reportingDescriptors) and section 3.49.15 (`reportingDescriptor.relationships`, each a
`target` reportingDescriptorReference into a taxonomy by `toolComponent` name and index):
https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/sarif-v2.1.0-errata01-os-complete.html.
A rule relates to a taxon as a `superset`: the technique is the wider class of attack, and
a result of the rule thereby belongs to the taxon (section 3.27.8, `result.taxa` implicitly
holds the taxa of its rule's `equal` or `superset` relationships), the same way CWE is
attached to rules.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hardenml.threats.taxonomy import mapping_version, taxon, taxonomy_sources

_ORGANIZATION = {"atlas": "MITRE", "owasp_ml": "OWASP Foundation"}
# The taxonomies in the order `run.taxonomies` lists them; a reference's index is this one.
_ORDER = ("atlas", "owasp_ml")


def sarif_taxonomies(used: Mapping[str, list[str]]) -> list[dict[str, Any]]:
    """One toolComponent per taxonomy, holding the taxa the rules of this log relate to
    (`used`: taxonomy key -> ids), in order of first use, so references index into it."""
    sources = {source.key: source for source in taxonomy_sources()}
    out = []
    for key in _ORDER:
        source = sources[key]
        taxa = []
        for taxon_id in used.get(key, []):
            ref = taxon(key, taxon_id)
            taxa.append(
                {
                    "id": ref.id,
                    "name": ref.name,
                    "shortDescription": {"text": ref.name},
                    "helpUri": ref.url,
                }
            )
        out.append(
            {
                "name": source.name,
                "version": source.version,
                "organization": _ORGANIZATION[key],
                "informationUri": source.url,
                "downloadUri": source.data,
                "isComprehensive": False,
                "shortDescription": {
                    "text": f"{source.name} {source.version}, as hardenml's threat mapping "
                    f"{mapping_version()} uses it"
                },
                "taxa": taxa,
            }
        )
    return out


def rule_relationships(
    taxonomy: Mapping[str, Any], used: dict[str, list[str]]
) -> list[dict[str, Any]]:
    """A rule's relationships to the taxa in a finding's `taxonomy` ids; records each taxon
    in `used` (taxonomy key -> ids in order) so the log's taxonomies list it."""
    relationships = []
    for component_index, key in enumerate(_ORDER):
        name = next(s.name for s in taxonomy_sources() if s.key == key)
        for taxon_id in taxonomy.get(key) or []:
            listed = used.setdefault(key, [])
            if taxon_id not in listed:
                listed.append(taxon_id)
            relationships.append(
                {
                    "target": {
                        "id": taxon_id,
                        "index": listed.index(taxon_id),
                        "toolComponent": {"name": name, "index": component_index},
                    },
                    "kinds": ["superset"],
                }
            )
    return relationships
