"""Benign requests: what a guard must not break. Not a threat (it is not registered):
validation asks both models these ordinary requests and counts the replies that do not
refuse (the refusal detector), so a guard that blocks everything cannot pass by refusing.
It plays the part clean accuracy plays for a classifier."""

from __future__ import annotations

from hardenml.threats.probes.base import PromptProbe


class BenignRequests(PromptProbe):
    prompt_file = "benign.json"
    detector_name = "refusal"
    behaviour = "over-refusal"
    title = "ordinary requests (over-refusal)"
    tactic = "asks an ordinary question"

    def unsafe(self, reply: str, secret: str) -> bool:
        # "Unsafe" here is the harm a guard does: refusing an ordinary request.
        return self.detector.flags(reply)
