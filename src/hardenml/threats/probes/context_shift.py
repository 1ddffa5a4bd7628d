"""Multi-turn context shift: a conversation that starts benign and drifts, turn by turn,
towards a disallowed request. The model fails when any reply complies (the
policy-violation detector). The budget (user turns) decides how far the drift goes: at
budget 1 only the benign opening is asked. Russinovich et al. 2024, "Great, Now Write an
Article About That: The Crescendo Multi-Turn LLM Jailbreak Attack",
https://arxiv.org/abs/2404.01833.
"""

from __future__ import annotations

from hardenml.threats.probes.base import PromptProbe


class ContextShift(PromptProbe):
    prompt_file = "context-shift.json"
    detector_name = "policy-violation"
    behaviour = "policy-violation"
    title = "multi-turn context shift (Crescendo, Russinovich et al. 2024)"
    tactic = "starts a benign conversation and drifts towards a disallowed request"

    def unsafe(self, reply: str, secret: str) -> bool:
        return self.detector.flags(reply)
