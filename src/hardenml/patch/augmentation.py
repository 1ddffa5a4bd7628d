"""Adversarial data augmentation: refit a scikit-learn model of any kind on its training
data plus adversarial examples found on it.

Kantchelian, Tygar & Joseph 2016, "Evasion and Hardening of Tree Ensemble Classifiers",
https://arxiv.org/abs/1509.07892, Sec. 5 ("adversarial boosting"): find evasions of the
model on its own training rows, add them with their true labels, retrain, and repeat.
The evasions come from the declared threat model: the threats that `policy.robust`
requires robustness against, at the policy's budgets and with the config's own threat
parameters (feature constraints, queries), as long as they run on the model (black-box
and tabular threats on any estimator; gradient ones need a linear model) and belong to
the families this patch addresses. Each round attacks the current model on (at most
`max_rows` of) the training rows, keeps every input it flipped, and refits a clone of the
parent estimator (`sklearn.base.clone`: the same hyperparameters) on the clean rows (the
training split less the patch's holdout) plus all adversarial rows found so far. Clean
and robust accuracy on the holdout are measured before and after every round (the same
attack draws each time); the model of the last round is kept.

Arguments (keyword-only):
    threat: the name of one `[[threats]]` entry to train against (default: each one the
        policy names that this patch addresses and that runs on the model).
    budget: train at this budget instead of the policy's, for every threat used. In a
        library call without declared attacks, `budget` alone trains against
        `tabular-blackbox` with its default parameters.
    rounds: attack-and-refit rounds (default 2); stops early when a round flips nothing.
    max_rows: training rows attacked per round, a seeded sample where there are more
        (default 5000): an attack's cost grows with the rows it attacks.

An estimator whose `random_state` is None gets one derived from the patch's seed, so that
the same seed gives the same patched model; the metrics list the parameters set.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import clone

from hardenml.patch.base import (
    Patch,
    PatchContext,
    PatchError,
    PatchResult,
    PatchUnchanged,
    TrainingAttack,
    sklearn_estimator,
    target_logits,
)
from hardenml.records import UnitKey
from hardenml.targets import SklearnTarget, Target, TargetError
from hardenml.threats import check_access, threat_class

DEFAULT_THREAT = "tabular-blackbox"


def seed_unset_random_states(estimator: Any, seed: int) -> list[str]:
    """Give every `random_state` parameter that is None (nested ones of pipelines and
    ensembles included) `seed`; return the names of those set."""
    unset = [
        name
        for name, value in estimator.get_params(deep=True).items()
        if (name == "random_state" or name.endswith("__random_state")) and value is None
    ]
    if unset:
        estimator.set_params(**dict.fromkeys(unset, seed))
    return unset


class AdversarialAugmentation(Patch):
    kinds = ("sklearn",)
    addresses = ("score-based", "decision-based", "tabular")
    summary = "refit on its training data plus adversarial examples found on it"

    def __init__(
        self,
        *,
        threat: str | None = None,
        budget: float | None = None,
        rounds: int = 2,
        max_rows: int = 5000,
    ) -> None:
        self.threat = threat
        self.budget = budget
        self.rounds = rounds
        self.max_rows = max_rows

    def run(self, ctx: PatchContext) -> PatchResult:
        if self.rounds < 1 or self.max_rows < 1:
            raise PatchError("adversarial_augmentation: rounds and max_rows must be at least 1")
        if self.budget is not None and self.budget <= 0:
            raise PatchError(
                f"adversarial_augmentation: budget must be positive, got {self.budget}"
            )
        attacks = self._attacks(ctx)
        parent = sklearn_estimator(ctx.target)
        # The estimator may have been fit on its own labels; hardenml's are class indices.
        own_labels = getattr(parent, "classes_", None)
        template = clone(parent)
        seeded = seed_unset_random_states(template, ctx.seed_for("refit") % 2**32)
        fit_x = ctx.fit.x.reshape(len(ctx.fit), -1)
        found_x: list[np.ndarray] = []
        found_y: list[np.ndarray] = []
        current: Target = ctx.target
        start = after = self._holdout(ctx, current, attacks)
        history: list[dict[str, Any]] = [{"round": 0, "added": 0, **start}]
        advance = ctx.progress.task(f"AdversarialAugmentation ({self.rounds} rounds)", self.rounds)
        for round_ in range(1, self.rounds + 1):
            rows = self._rows(ctx, round_)
            flipped = {}
            for attack in attacks:
                x_adv, y_adv = self._flipped(ctx, current, attack, rows, round_)
                found_x.append(x_adv.reshape(len(x_adv), fit_x.shape[1]))
                found_y.append(y_adv)
                flipped[str(UnitKey(attack.name, attack.budget))] = len(y_adv)
            advance(1)
            if not sum(flipped.values()):
                history.append({"round": round_, "added": 0, "flipped": flipped})
                advance(self.rounds - round_)
                break
            y_all = np.concatenate([ctx.fit.y, *found_y])
            estimator = clone(template)
            try:
                estimator.fit(
                    np.concatenate([fit_x, *found_x]),
                    y_all if own_labels is None else np.asarray(own_labels)[y_all],
                )
            except ValueError as exc:
                raise PatchError(f"refitting {type(parent).__name__} failed: {exc}") from None
            current = SklearnTarget(
                estimator, input_spec=ctx.target.input_spec, classes=ctx.target.classes
            )
            after = self._holdout(ctx, current, attacks)
            history.append(
                {"round": round_, "added": sum(flipped.values()), "flipped": flipped, **after}
            )
        added = sum(len(y) for y in found_y)
        if not added:
            raise PatchUnchanged(self._unchanged(ctx, attacks), history=history)
        metrics = {
            "holdout_n": len(ctx.holdout),
            "fit_n": len(ctx.fit),
            "attacks": [str(UnitKey(a.name, a.budget)) for a in attacks],
            "rounds_run": len(history) - 1,
            "added": added,
            "before": start,
            "after": after,
            "random_state_set": seeded,
        }
        return PatchResult(target=current, metrics=metrics, history=history)

    def _attacks(self, ctx: PatchContext) -> list[TrainingAttack]:
        """The threats to train against, at the budget to train at (see the module doc)."""
        declared = list(ctx.attacks)
        if not declared:
            if self.budget is None:
                raise PatchError(
                    "adversarial_augmentation needs a threat to train against: declare a "
                    "[[policy.robust]] requirement for a black-box or tabular threat, or "
                    f"pass budget=... to train against {DEFAULT_THREAT!r}"
                )
            default = threat_class(DEFAULT_THREAT)()
            declared = [TrainingAttack(DEFAULT_THREAT, default, float(self.budget))]
        if self.threat is not None:
            chosen = [a for a in declared if a.name == self.threat]
            if not chosen and self.threat in ctx.held_out:
                raise PatchError(
                    f"adversarial_augmentation: threat {self.threat!r} is held out "
                    "(held_out = true): no patch trains on it; it is only for checking"
                )
            if not chosen:
                names = sorted({a.name for a in declared})
                raise PatchError(
                    f"adversarial_augmentation: threat {self.threat!r} is not one the policy "
                    f"requires robustness against; one of {names}"
                )
            try:
                check_access(ctx.target, {a.name: a.threat for a in chosen})
            except TargetError as exc:
                raise PatchError(str(exc)) from None
        else:
            runs = ctx.target.has_gradients
            chosen = [
                a
                for a in declared
                if a.threat.family in self.addresses and (runs or not a.threat.needs_gradients)
            ]
            if not chosen:
                names = sorted({f"{a.name} ({a.threat.family})" for a in declared})
                raise PatchError(
                    "adversarial_augmentation trains against black-box and tabular threats "
                    f"that run on this model; the policy names only {names}. Declare one "
                    "(tabular-blackbox, square) in [[policy.robust]]"
                )
        if self.budget is not None:
            chosen = [TrainingAttack(a.name, a.threat, float(self.budget)) for a in chosen]
        # One per threat and budget: a budget override can merge the policy's budgets.
        return list({(a.name, a.budget): a for a in chosen}.values())

    def _rows(self, ctx: PatchContext, round_: int) -> np.ndarray:
        n = len(ctx.fit)
        if n <= self.max_rows:
            return np.arange(n)
        rng = np.random.default_rng(ctx.seed_for("rows", round_))
        return np.sort(rng.choice(n, size=self.max_rows, replace=False))

    def _flipped(
        self,
        ctx: PatchContext,
        target: Target,
        attack: TrainingAttack,
        rows: np.ndarray,
        round_: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The adversarial inputs `attack` finds for training rows the model got right,
        with their true labels."""
        x, y = ctx.fit.x[rows], ctx.fit.y[rows]
        generator = ctx.generator("round", round_, attack.name, attack.budget)
        result = attack.run(target, x, y, generator)
        flipped = (result.clean_correct & result.success).numpy()
        return result.x_adv.numpy()[flipped], y[flipped]

    def _holdout(
        self, ctx: PatchContext, target: Target, attacks: list[TrainingAttack]
    ) -> dict[str, float]:
        """Clean accuracy and robust accuracy under each attack on the holdout; the same
        attack draws every call, so rounds compare on equal terms."""
        x, y = ctx.holdout.x, ctx.holdout.y
        out = {"clean": float(np.mean(target_logits(target, x).argmax(axis=1) == y))}
        for attack in attacks:
            generator = ctx.generator("holdout", attack.name, attack.budget)
            result = attack.run(target, x, y, generator)
            out[str(UnitKey(attack.name, attack.budget))] = float(
                result.robust_correct.float().mean()
            )
        return out

    def _unchanged(self, ctx: PatchContext, attacks: list[TrainingAttack]) -> str:
        units = ", ".join(str(UnitKey(a.name, a.budget)) for a in attacks)
        return (
            f"adversarial_augmentation found no adversarial example on {len(ctx.fit)} "
            f"training rows ({units}): the model already resists these attacks on its "
            "training data, so a refit would see only the clean rows again; nothing was "
            "written or recorded. A larger budget or a stronger attack (more queries) may "
            "find some"
        )
