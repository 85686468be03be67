"""Shape inference (pure, no arrays), the compiled plan of forward and backward closures, the
fusion of layer pairs, and the gradient check and timing built on the plan."""
