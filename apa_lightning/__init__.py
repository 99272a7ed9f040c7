"""Applied deep learning experiments as Lightning modules, launched and composed by Hydra."""

__version__ = "0.1.0"

import os  # noqa: E402

# OpenMP's waiting threads sleep instead of spinning: beside other jobs, spinning threads take the CPU from the
# thread they wait for (a run 3-10x slower). OpenMP reads this once, when torch loads it: before any import of torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from apa_lightning.cli.environment import check_dependencies  # noqa: E402

check_dependencies()  # a Python without them (outside .venv): one line on how to use the virtual environment

from apa_lightning.runs import names as run_names  # noqa: E402,F401  (registers the run-name resolvers the configs use)
