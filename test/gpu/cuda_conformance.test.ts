// The cuda backend against the whole conformance suite: world size 1 on one GPU, up to 4 where
// there are more (NCCL refuses two ranks on one device). Without a usable GPU, driver and NCCL,
// the reason is printed and every case is skipped. `npm run test:gpu` runs this folder only.
import { suite } from 'uvu';
import { defineConformance } from 'groupcomm/conformance';

await defineConformance({ plugin: 'cuda', worldSizes: [1, 2, 3, 4], deadlineMs: 300_000 }, { suite });
