"""Skywork-MathQA data synthesis: MetaMath, Evol-Instruct and Xwin augmentation under one answer
contract, k-center core-set selection, and the two-stage pipeline (`mathforge.synth.pipeline`)."""
