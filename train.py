"""Train the multilevel KPN denoiser: ``python train.py --config configs/quick.toml``.

A thin entry point over :func:`kpn.train.cli.main`; ``python train.py --help`` lists the options.
"""

from kpn.train.cli import run

if __name__ == "__main__":
    run()
