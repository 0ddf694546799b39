"""What the top-level scripts import, one folder per job (README.md, "What is where"). Nothing here imports a
top-level script (tests/test_layout.py)."""
