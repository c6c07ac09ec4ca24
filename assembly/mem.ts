// Raw memory for the host: hot paths pass pointers into regions the host allocated once,
// instead of the loader's managed arrays (a copy and an allocation per call).

/** Allocates `size` bytes aligned to 16; never moves. Pair with `free`. */
export function alloc(size: usize): usize {
  return heap.alloc(size);
}

/** Releases a region returned by `alloc`. */
export function free(ptr: usize): void {
  heap.free(ptr);
}
