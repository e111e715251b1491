"""Data quality: decontamination, dedup, format checks, verification, selection, export.

Every step either decides per record (a filter: keep, or drop with a reason) or selects under a
budget, and every one records the difficulty and subject distribution before and after it, so the
paper's finding that verification lowers difficulty (§4.3.3) shows up on any run.
"""
