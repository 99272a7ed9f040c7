"""The tasks ``python -m apa_lightning task=<name>`` runs: ``train`` (fit, then test the best checkpoint),
``eval`` and ``predict`` (a trained checkpoint on a data config or on image files), ``eda`` (what a dataset holds),
``detect`` (``apa_lightning.detection``), and the summary of a sweep (``sweep_summary``); with what training needs
at run time (``precision``, ``distributed``)."""

# task -> "module:function" taking the composed config; the module is imported only when its task runs.
TASKS = {
    "train": "apa_lightning.tasks.train:train",
    "eda": "apa_lightning.tasks.eda:explore",
    "detect": "apa_lightning.detection.train:train",
    "eval": "apa_lightning.tasks.evaluate:evaluate",
    "predict": "apa_lightning.tasks.predict:predict",  # a .ckpt here; a YOLO .pt goes on to detection.predict
}
