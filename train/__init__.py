"""train: SFT and RL recipes on TRL, losses, rewards (which call curate's verifiers), evaluation.

Imports `curate` and `stages`.
"""
