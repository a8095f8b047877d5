"""Files: images (PFM, PNG/JPEG/TIFF, camera raw), noise profiles, checkpoints, run
folders, and the atomic writes everything goes through."""
