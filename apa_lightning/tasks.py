"""The tasks ``python -m apa_lightning task=<name>`` runs."""

# task -> "module:function" taking the composed config; the module is imported only when its task runs.
TASKS = {
    "train": "apa_lightning.run:train",
    "eda": "apa_lightning.eda:explore",
    "detect": "apa_lightning.detection.train:train",
    "predict": "apa_lightning.detection.predict:predict",
}
