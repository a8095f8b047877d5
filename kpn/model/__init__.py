"""The network: pyramid, per-pixel features, the MLP, the star kernels and the blend,
put together by :mod:`kpn.model.network` (each level in bands by
:mod:`kpn.model.level_filter`); the float16 emulation of vkdt, the fused training band,
the C loops and the tiled forward pass for large images; and the plain stages that the
tests compare them against (:mod:`kpn.model.reference`)."""
