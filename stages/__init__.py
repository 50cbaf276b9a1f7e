"""stages: route probed items to SFT / RL / replay / drop, source demonstrations, export splits.

Imports `curate`, never `train`.
"""
