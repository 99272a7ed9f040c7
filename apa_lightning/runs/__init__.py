"""Run directories: what a run writes and how it is found again. The run record, ``metrics.json`` from start to
end, and the log-file lines (``record``), atomic files (``files``), checkpoints read safely (``checkpoints``) and
located for eval/predict (``checkpoint_lookup``), the run lock (``lock``), directory names (``names``), loggers
and the HParams entry (``loggers``, ``hparams``) and the pictures a run draws (``figures``)."""
