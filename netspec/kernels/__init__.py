"""The NumPy kernels the layers run: col2im, Winograd F(4x4, 3x3), BLAS thread limits, keyed
noise and workspace memory. They know nothing of specs or plans."""
