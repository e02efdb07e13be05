"""Test-session environment, for the unit tests and for the notebook kernels nbval starts (they inherit it).

Set before anything imports huggingface_hub or torch: the test suite never tries the network, and the notebooks
run on the trained toy stand-ins (``NBHELPERS_STAND_IN=toy``; the unit tests under ``tests/`` use the tiny
random-weight ones, see ``tests/conftest.py``).

One torch thread per process: the tiny models' operations are microseconds long, and with more threads each
one ends at an OpenMP barrier. When another process is busy on the same cores (a notebook kernel, a test server,
a second pytest worker, any other job), a thread that lost its core holds everyone at that barrier for a
scheduler time slice; a tiny DeciDiffusion image then took 70-130 s instead of about 2 s on the 2-core CI
machine. ``OMP_NUM_THREADS`` set by the caller wins.
"""

import os
import sys

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["NBHELPERS_STAND_IN"] = "toy"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")
if "torch" in sys.modules:  # a plugin imported torch before this file: set its pool size directly
    sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

#: Seconds nbval waits for each message a kernel publishes after a cell's reply (its last outputs and the "idle"
#: status). nbval hard-codes 5 s (computationalmodelling/nbval#136, #231); on the 2-core CI machine, with a second
#: worker busy, notebook 03's training cell once failed on it after finishing its work. A hung cell is still
#: stopped by ``--nbval-cell-timeout``.
NBVAL_OUTPUT_TIMEOUT_S = 120


def pytest_collection_modifyitems(items):
    for item in items:
        if hasattr(item, "output_timeout"):  # nbval's notebook cells
            item.output_timeout = NBVAL_OUTPUT_TIMEOUT_S
