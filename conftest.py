"""Test-session environment, for the unit tests and for the notebook kernels nbval starts (they inherit it).

Set before anything imports huggingface_hub: the test suite never tries the network, and the notebooks run on
the offline tiny models.
"""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["NBHELPERS_TINY"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
