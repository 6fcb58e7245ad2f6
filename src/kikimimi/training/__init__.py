"""Building blocks of the pre-training loop (:mod:`kikimimi.training.trainer`): LR schedules, distributed set-up
and checkpoint/RNG state handling. Each module has one job; the trainer composes them."""
