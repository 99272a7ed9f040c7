"""LightningModules: they own the loss, the metrics and the optimisation of a plain network. ``autoencoder``,
``vae`` and ``classifier`` on a common base (``base``: epoch logs, channels-last, compile) and what the autoencoders
share (``reconstruction``); input corruptions (``noise``), optimizers and schedulers from config (``optim``), and a
trained module rebuilt from a checkpoint (``from_checkpoint``)."""
