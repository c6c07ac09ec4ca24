// The cuda backend against the conformance suite. Without a usable GPU, CUDA driver and NCCL
// the suite prints why and every case is skipped (test/gpu/ runs the same on GPU machines).
import { defineConformance } from './define.js';

await defineConformance({ plugin: 'cuda', worldSizes: [1, 2, 3, 4] });
