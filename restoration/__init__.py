"""diffsci.restoration: measurement operators and posterior samplers for super-resolution,
inpainting, deblurring and denoising (RED-Diff, ensemble SMC, DPS). Not built yet."""
