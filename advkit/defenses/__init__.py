"""Defenses: AdvFilter denoisers and their evaluation."""

from advkit.defenses.evaluate import evaluate_on_store, recovered_fraction, store_rows

__all__ = ["evaluate_on_store", "recovered_fraction", "store_rows"]
