"""The compute phases of a round: train, score (fallback), retrain with masks, evaluate, register versions.

Called from the ``gpu``-queue tasks in ``workers/tasks/rounds.py`` (and, for draft masks, from
``rounds.workflow.round_push``); torch and ``ml`` are imported inside the functions so the web process
never loads them. Each phase turns the round's rows into a spec for the Django-free pipeline
(``ml.training.pipeline``, ``ml.active``, ``ml.data.protocols``) and reports progress:

* ``rounds.phases.common``: what every phase shares: ``RoundStopped``, the round's artifact directory
  (``round_dir``), the device, the dataset's rows and protocol splits (``dataset_rows``,
  ``protocol_splits``), the training masks and region targets, the parent round's models, and the
  loader wrapper that reports training progress and stops a cancelled round.
* ``rounds.phases.training``: training → scoring (``round_train``) and retraining → evaluating
  (``round_retrain``): the round's config as a ``FitSpec`` (``fit_spec``), one detector trained in
  process (``train_fit``) or data-parallel under torchrun (``workers.ddp_train``) when
  ``train_processes`` > 1.
* ``rounds.phases.score``: scoring → selecting in process (``round_score``, when the round says
  ``scoring: in_process``: the distributed path's shard body over its shards in one task, then its
  selection) and the scoring settings the training phase leaves for ``rounds.scoring``
  (``_configure_distributed_scoring``).
* ``rounds.phases.drafts``: draft masks for the selection (``write_drafts``), before it goes to
  Label Studio (or, with ``labeling: none``, to whatever brings the masks).
* ``rounds.phases.draft_quality``: IoU of each draft with the submitted mask (when annotation ends)
  and with the ground truth (when the round evaluates), per round: count, mean, median, skipped.
* ``rounds.phases.evaluation``: evaluating → done: test metrics (``round_evaluate``, with
  ``video_level``) and one ``DetectorVersion`` per detector (``_register_versions``).

Data rules (DESIGN §3):
* Training rows are the protocol's ``train`` split of the dataset's Sample rows; validation (early
  stopping, threshold) uses the ``val`` split with no masks at all.
* Masks for training are the collected ``Mask`` rows' files (latest version per sample), never
  ``Sample.gt_mask_path``. LAE gets its locality loss on exactly those samples (``has_mask``); SJEDD's
  local-region targets come from the same masks through the data engine's landmark mapping
  (``ml.data.regions.region_targets_from_mask``); fakes without a mask only say "fake" (other nodes
  unknown) unless the round's ``region_targets`` is ``manifest``.
* Evaluation runs on the protocol's ``test_seen`` and ``test_unseen`` splits; only here are the ground-
  truth masks read (localization metrics, and the drafts' IoU with the selection's ground truth).
* Every training run writes ``checkpoint.pt`` each epoch under ``MEDIA_ROOT/rounds/...``; a redelivered
  task (killed worker, ``acks_late``) finds it and resumes where the last epoch ended.
"""
