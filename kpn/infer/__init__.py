"""Inference: trained weights as a denoiser of photos, the noise profile of each file,
the SURE blend and the noise estimate."""
