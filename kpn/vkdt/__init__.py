"""The bridge to vkdt: its ``.lut`` weights file, a model to and from it, the graphs that
run and train kpn's weights in vkdt, and which vkdt (ce12d6ed, or with kpn's patch series)
runs a model."""
