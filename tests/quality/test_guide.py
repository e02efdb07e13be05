"""The offline example at the top of docs/quality.md runs as written and prints labelled, meaningless numbers."""

from __future__ import annotations

import re
from pathlib import Path

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "quality.md"


def test_the_guides_first_example_runs(capsys):
    first_block = re.search(r"```python\n(.*?)```", GUIDE.read_text(encoding="utf-8"), re.DOTALL)
    assert first_block is not None
    exec(compile(first_block.group(1), str(GUIDE), "exec"), {})  # the guide's own code, from this repository
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "CLIP score (nbhelpers/tiny-random-clip-v1; tiny, random weights: meaningless)"
    assert [line.split(" ")[0] for line in printed[1:]] == ["right", "always"]
    assert all("(n=36, 95% CI)" in line for line in printed[1:])
