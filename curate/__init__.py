"""curate: load candidate problems, profile them, probe a model on them, and measure mastery.

The lowest layer of stagewise: it imports nothing from `stages` or `train`.
"""
