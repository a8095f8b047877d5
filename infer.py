"""Denoise photos with trained KPN weights: ``python infer.py INPUT... --weights W``.

A thin wrapper of :mod:`kpn.infer` (also the console script ``kpn-infer``); see
``python infer.py --help``.
"""

import os

# OpenMP threads that spin while they wait make torch's two-thread CPU kernels 10-30x
# slower when other processes share the cores; waiting passively costs little otherwise.
# It must be set before torch loads its OpenMP runtime; the environment still decides.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from kpn.infer import run

if __name__ == "__main__":
    run()
