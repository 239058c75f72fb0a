"""Optional fused kernels, each tested against the pure-PyTorch reference of its mixer."""
