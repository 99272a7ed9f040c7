"""The command line, ``python -m apa_lightning``: the Hydra entry point (``main``), the checks of overrides and
config before anything heavy loads (``overrides``, ``config_checks``), what the console prints (``console``) and
whether the installed environment works (``environment``, ``install_check``). Torch-free."""
