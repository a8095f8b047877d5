"""Denoise photos with trained KPN weights: ``python infer.py INPUT... --weights W``.

A thin wrapper of :mod:`kpn.infer.cli` (also the console script ``kpn-infer``); see
``python infer.py --help``.
"""

from kpn.cli import kpn_infer

if __name__ == "__main__":
    kpn_infer()
