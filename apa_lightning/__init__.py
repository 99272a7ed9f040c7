"""Applied deep learning experiments as Lightning modules, launched and composed by Hydra."""

__version__ = "0.1.0"

import os  # noqa: E402

# OpenMP's waiting threads spin 3,000 rounds (about 30 us) and then sleep. GNU OpenMP's own default spins 3 ms:
# beside other jobs the spinning threads take the CPU from the thread they wait for (the default run 2.7x slower
# beside 4 busy processes), while sleeping at once (OMP_WAIT_POLICY=PASSIVE) makes an idle run 1.3-1.5x slower;
# 3,000 rounds keeps both figures (benchmarks/threads.py, docs/performance.md). OpenMP reads this once, when torch
# loads it: before any import of torch. A wait policy of the user's (either variable) is left alone.
if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ["GOMP_SPINCOUNT"] = "3000"

from apa_lightning.cli.environment import check_dependencies  # noqa: E402

check_dependencies()  # a Python without them (outside .venv): one line on how to use the virtual environment

from apa_lightning.runs import names as run_names  # noqa: E402,F401  (registers the run-name resolvers the configs use)
