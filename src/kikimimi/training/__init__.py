"""Building blocks of the pre-training loop (:mod:`kikimimi.train`): LR schedules, distributed set-up
and checkpoint/RNG state handling. Each module has one job; the trainer composes them."""
