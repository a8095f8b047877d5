"""The bridge to vkdt: its ``.lut`` weights file, a model to and from it, and the graphs
that run and train kpn's weights in vkdt."""
