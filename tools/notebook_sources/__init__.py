"""One module per notebook; each defines ``NOTEBOOK`` (file name) and ``CELLS``."""
