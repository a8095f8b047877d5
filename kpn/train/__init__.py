"""Training: the loop, its loss and optimiser, validation, and what it shows in
TensorBoard."""
