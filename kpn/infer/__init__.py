"""Inference: trained weights as a denoiser of photos, the noise profile of each file,
the SURE blend, the noise estimate, and what vkdt's float16 arithmetic costs a model."""
