"""``train_log.csv``: the loss of every step of a run, each step exactly once, across resumes.

A resumed run first cuts the log back to its checkpoint's step (the steps after it are trained again), then
appends one row per step. Rows that do not parse (a hand-edited or damaged file) are dropped with one warning.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

from nbhelpers.atomic import atomic_open

logger = logging.getLogger(__name__)

LOG_FILE = "train_log.csv"


class RunLog:
    """The loss log in ``output_dir``."""

    def __init__(self, output_dir: Path) -> None:
        self.path = Path(output_dir) / LOG_FILE

    def read(self, up_to_step: int) -> list[tuple[int, float]]:
        """``[(step, loss), ...]`` of the steps up to ``up_to_step`` (``[]`` without a log)."""
        if not self.path.exists():
            return []
        rows, unreadable = [], 0
        with open(self.path, newline="", encoding="utf-8", errors="replace") as file:
            for row in csv.DictReader(file):
                try:
                    rows.append((int(row["step"]), float(row["loss"])))
                except (KeyError, TypeError, ValueError):
                    unreadable += 1
        if unreadable:
            logger.warning("%s: ignoring %d rows that are not a step and a loss.", self.path, unreadable)
        return [(step, loss) for step, loss in rows if step <= up_to_step]

    def rewrite(self, losses: list[tuple[int, float]]) -> None:
        """Replace the log with ``losses`` (atomically)."""
        with atomic_open(self.path, "w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(["step", "loss"])
            writer.writerows(losses)

    def append(self, step: int, loss: float) -> None:
        with open(self.path, "a", newline="") as file:
            csv.writer(file).writerow([step, loss])
