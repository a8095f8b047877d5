"""Train the multilevel KPN denoiser: ``python train.py --config configs/quick.toml``.

A thin entry point over :mod:`kpn.train.cli`; ``python train.py --help`` lists the options.
"""

from kpn.cli import kpn_train

if __name__ == "__main__":
    kpn_train()
