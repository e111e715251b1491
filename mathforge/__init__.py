"""mathforge: a Skywork-Math style toolkit for math SFT data synthesis, selection, training and evaluation."""

from mathforge.record import Lineage, Record

__all__ = ["Lineage", "Record"]
