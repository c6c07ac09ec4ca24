// Tensor-dict metadata frames: encode, decode, validate (see docs/wire-format.md).
