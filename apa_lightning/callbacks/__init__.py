"""Lightning callbacks: checkpoints a resume can trust (``checkpoints``), ``metrics.csv``, ``curves.png`` and a
console line per epoch (``epoch_metrics``), image grids of autoencoders and VAEs (``image_grids``), the classifiers'
per-class report (``classification_report``), the font's tables and pictures (``font_pictures``), the layer-by-layer
summary (``model_summary``), the stop of a diverged run (``finite_loss``), per-epoch random streams
(``epoch_seed``), the CPU thread count (``torch_threads``), training speed (``throughput``) and the progress bar
(``progress_bar``)."""
