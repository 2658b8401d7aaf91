"""The trainer process: the recipe (transformers + peft + trl), the engine's step, exact resume,
the run guard, trackers, distributed ranks and the probe. Imports everything below it.
"""
