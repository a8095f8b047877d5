"""The bridge to vkdt: its ``.lut`` weights file, export and import, the graphs that run
and train kpn's weights in vkdt, and what vkdt's float16 arithmetic costs a model."""
