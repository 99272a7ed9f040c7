"""LightningModules: they own the loss, the metrics and the optimisation of a plain network."""
