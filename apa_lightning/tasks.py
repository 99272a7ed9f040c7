"""The tasks ``python -m apa_lightning task=<name>`` runs."""

# task -> "module:function" taking the composed config; the module is imported only when its task runs.
TASKS = {
    "train": "apa_lightning.run:train",
    "eda": "apa_lightning.eda:explore",
    "detect": "apa_lightning.detection.train:train",
    "eval": "apa_lightning.evaluate:evaluate",
    "predict": "apa_lightning.predict:predict",  # a .ckpt here; a YOLO .pt goes on to detection.predict
}
