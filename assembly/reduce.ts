// Reduction kernels: dst = op(dst, src) for every dtype.
