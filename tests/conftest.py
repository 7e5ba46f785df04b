import os

# Tests draw figures without a screen.
os.environ.setdefault("MPLBACKEND", "Agg")
