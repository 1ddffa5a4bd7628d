"""Jailbreak framings of disallowed requests: role-play, fiction, hypotheticals, claimed
authority, forced prefixes. The model fails a conversation when a reply complies (the
policy-violation detector: no refusal, a disallowed topic, instructions). The framings
follow the categories of Wei et al. 2023, "Jailbroken: How Does LLM Safety Training
Fail?", https://arxiv.org/abs/2307.02483.
"""

from __future__ import annotations

from hardenml.threats.probes.base import PromptProbe


class Jailbreak(PromptProbe):
    prompt_file = "jailbreak.json"
    detector_name = "policy-violation"
    behaviour = "policy-violation"
    title = "jailbreak framings of disallowed requests (Wei et al. 2023)"
    tactic = "wraps a disallowed request in role-play, fiction or a claimed authority"

    def unsafe(self, reply: str, secret: str) -> bool:
        return self.detector.flags(reply)
