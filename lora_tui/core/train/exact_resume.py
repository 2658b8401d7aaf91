"""Exact resume: the data order of every epoch depends on the seed and the epoch alone.

transformers builds its length-grouped sampler without a generator, so each epoch's order comes
from the global torch RNG at the moment the epoch starts. A run resumed from a checkpoint reaches
that moment with a different RNG state (no evaluation before training, checkpoint loading), so it
saw other batches than the uninterrupted run and its adapter differed (max abs diff ~0.02 on the
tiny test model). Seeding the sampler per epoch makes kill -9 + --resume bit-identical
(tests/test_reliability_training.py). torch / transformers are imported inside the function.

``train_from`` is the resume itself. A checkpoint saved at the run's last step (a kill after the final
checkpoint, before the adapter was saved) leaves nothing to train, but transformers' loop takes one
optimiser step before it first looks at max_steps: "step 5/4", an adapter that differs from the
uninterrupted run's. Such a checkpoint's weights are loaded instead, and no step is trained.
"""

from __future__ import annotations


def seed_the_sampler(trainer, seed: int) -> None:
    """Make `trainer`'s training sampler draw each epoch's order from (seed, epoch) only."""
    original = trainer._get_train_sampler

    def seeded(*args, **kwargs):
        sampler = original(*args, **kwargs)
        if sampler is None or getattr(sampler, "generator", "absent") is not None:
            return sampler  # no sampler, or one that already has its own generator
        import torch

        sampler.generator = torch.Generator()
        sampler.generator.manual_seed(seed)
        base_iter = type(sampler).__iter__

        class EpochSeeded(type(sampler)):
            """The same sampler, reseeded from (seed, epoch) when each epoch starts."""

            epoch = 0

            def set_epoch(self, epoch: int) -> None:
                self.epoch = epoch

            def __iter__(self):
                self.generator.manual_seed(seed + 1000003 * self.epoch)
                return base_iter(self)

        sampler.__class__ = EpochSeeded
        return sampler

    trainer._get_train_sampler = seeded


def train_from(trainer, checkpoint):
    """``trainer.train`` resumed from ``checkpoint`` (a Path, or None: from scratch); returns its TrainOutput, or
    None when the checkpoint is at the last step: then only its adapter weights and trainer state are loaded."""
    from lora_tui.core.run.checkpoints import WEIGHTS, reached_end

    saved = next((checkpoint / name for name in WEIGHTS if (checkpoint / name).is_file()), None) if checkpoint else None
    if saved is None or not reached_end(checkpoint):  # (a sharded FSDP save has no adapter file: transformers loads it)
        return trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    from peft import set_peft_model_state_dict
    from transformers import TrainerState

    if saved.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(saved))
    else:  # adapter_model.bin (older peft): tensors only, never pickled objects
        import torch

        state = torch.load(saved, map_location="cpu", weights_only=True)
    set_peft_model_state_dict(trainer.model, state)
    trainer.state = TrainerState.load_from_json(str(checkpoint / "trainer_state.json"))
    return None
