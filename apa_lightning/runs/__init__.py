"""Run directories: what a run writes and how it is found again. Atomic files and the run record
(``files``), checkpoints read safely (``checkpoints``) and located for eval/predict (``checkpoint_lookup``), the
run lock (``lock``), directory names (``names``), loggers and their HParams (``loggers``, ``hparams``) and the
pictures a run draws (``figures``)."""
