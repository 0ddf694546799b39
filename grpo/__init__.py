"""Pieces of the GRPO update that train_grpo.py uses and that need no TRL (grpo/packing.py: micro-batches of real tokens)."""
