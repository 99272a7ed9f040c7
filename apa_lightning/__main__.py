"""``python -m apa_lightning [overrides]``: the command line of ``apa_lightning.cli.main``."""

from apa_lightning.cli.main import cli

if __name__ == "__main__":
    cli()
