"""How the shipped PartiPrompts subset (``prompts/parti.csv``) was chosen, so anyone can make it again.

PartiPrompts (P2, Google Research, Apache-2.0; https://github.com/google-research/parti, file
``PartiPrompts.tsv``) has 1,632 prompts in 12 categories and 11 challenge types. The subset keeps
``per_category`` prompts of every category (48 by default), spreading the challenge types:

1. prompts longer than CLIP's 77 tokens are dropped (the CLIP score would silently truncate them), as are
   repeated prompts;
2. categories are taken in alphabetical order; for each pick, the category's challenge types not yet used in it
   are ranked by how often they were picked so far (fewest first, then by name) and the first is taken;
3. within that category and challenge, one prompt is drawn with ``numpy.random.default_rng(seed)``.

Rebuild it (maintainers; needs the TSV from the parti repository)::

    python -m nbhelpers.quality.parti_selection PartiPrompts.tsv nbhelpers/quality/prompts/parti.csv
"""

from __future__ import annotations

import argparse
import csv
import io
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from nbhelpers.atomic import atomic_open
from nbhelpers.models.tiny import cache_root
from nbhelpers.models.tokenizer import load_clip_tokenizer

#: The columns of the shipped CSV: PartiPrompts' own four plus the prompt's line in the source TSV.
COLUMNS = ("prompt", "category", "challenge", "note", "parti_line")
CLIP_TOKEN_LIMIT = 77


def read_parti_tsv(text: str) -> list[dict[str, str]]:
    """PartiPrompts.tsv as rows with :data:`COLUMNS` (``parti_line``: 2 for the first prompt, after the header)."""
    rows = []
    for line, record in enumerate(csv.DictReader(io.StringIO(text), delimiter="\t"), start=2):
        rows.append(
            {
                "prompt": record["Prompt"].strip(),
                "category": record["Category"],
                "challenge": record["Challenge"],
                "note": record.get("Note") or "",
                "parti_line": str(line),
            }
        )
    return rows


def select_prompts(
    rows: Sequence[dict[str, str]],
    count_tokens: Callable[[str], int],
    *,
    per_category: int = 4,
    seed: int = 0,
) -> list[dict[str, str]]:
    """The subset described in the module docstring, in category order."""
    seen: set[str] = set()
    usable = []
    for row in rows:
        if row["prompt"] not in seen and count_tokens(row["prompt"]) <= CLIP_TOKEN_LIMIT:
            seen.add(row["prompt"])
            usable.append(row)
    rng = np.random.default_rng(seed)
    picked_challenges: Counter[str] = Counter()
    chosen: list[dict[str, str]] = []
    for category in sorted({row["category"] for row in usable}):
        in_category = [row for row in usable if row["category"] == category]
        unused = sorted({row["challenge"] for row in in_category})
        for _ in range(min(per_category, len(in_category))):
            if not unused:  # fewer challenge types than picks: start over with all of them
                unused = sorted({row["challenge"] for row in in_category})
            challenge = min(unused, key=lambda name: (picked_challenges[name], name))
            unused.remove(challenge)
            pool = [row for row in in_category if row["challenge"] == challenge and row not in chosen]
            if not pool:
                continue
            chosen.append(pool[int(rng.integers(len(pool)))])
            picked_challenges[challenge] += 1
    return chosen


def write_csv(rows: Sequence[dict[str, str]], path: str | Path) -> None:
    with atomic_open(path, "w", encoding="utf-8", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Make the shipped PartiPrompts subset from PartiPrompts.tsv.")
    parser.add_argument("tsv", type=Path, help="PartiPrompts.tsv from https://github.com/google-research/parti")
    parser.add_argument("out", type=Path, help="the CSV to write")
    parser.add_argument("--per-category", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    tokenizer = load_clip_tokenizer(cache_root() / "clip-tokenizer")
    rows = read_parti_tsv(args.tsv.read_text(encoding="utf-8"))
    chosen = select_prompts(
        rows, lambda text: len(tokenizer(text).input_ids), per_category=args.per_category, seed=args.seed
    )
    write_csv(chosen, args.out)
    print(f"{len(chosen)} prompts from {len(rows)} written to {args.out}")


if __name__ == "__main__":
    main()
