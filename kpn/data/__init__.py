"""Training data: vkdt's cnngenin synthesis, the procedural dead-leaves images, the photo
training set, and the datasets and loader that turn them into batches."""
