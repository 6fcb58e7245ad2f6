"""Pre-training: :func:`~kikimimi.training.pretrain.run_pretraining` assembles a run from its settings
(:mod:`~kikimimi.training.settings`, :mod:`~kikimimi.training.run_folder`, :mod:`~kikimimi.training.captions`);
the loop is :class:`~kikimimi.training.trainer.Trainer`, with distributed set-up
(:mod:`~kikimimi.training.distributed`) and checkpoint/RNG state handling (:mod:`~kikimimi.training.checkpointing`).
A captioner run: :func:`~kikimimi.training.captioner_run.train_captioner` (frame features of a frozen encoder,
:func:`~kikimimi.training.captioner.fit_captioner`, the captioner folder).
Each module has one job."""
