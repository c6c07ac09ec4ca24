/** The small object of `groupcomm bench pg` (the same fields as peers/vllm_like_pg_bench.py's). */
export const SMALL = { op: 'step', seq: 0, shape: [8, 4096], dtype: 'float16', ranks: [0, 1, 2, 3], flag: true, name: 'layer.0.weight' };
