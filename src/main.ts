#!/usr/bin/env -S node --max-semi-space-size=4 --min-semi-space-size=4 --initial-old-space-size=48 --expose-gc --no-maglev
// The srm-mirror executable: see src/cli.ts for the commands. The flags above fix V8's young generation at 4 MB.
// The cap: streaming gigabytes to many clients makes it grow to tens of MB of short-lived garbage otherwise (bench:
// peak RSS 175 MB instead of about 135 MB, same throughput). The floor: after 30 s idle V8 shrinks it to 1 MB (low
// allocation rate), and under load it does not grow back (few survivors), so an idled mirror scavenged twice as often
// as a fresh one (--trace-gc, cached release/latest: 114 answers per scavenge instead of 227; with the floor 232).
// --initial-old-space-size: V8 counts the bytes of new ArrayBuffers (every socket read of a download is one) toward
// the old generation's limit until the next full collection, and left to itself it shrinks that limit to a few MB
// above the live heap; after an idle, a cold download then ran a full collection every ~80 ms (--trace-gc: 24 in 4
// downloads), at 25 % of the mirror's CPU. The live heap is ~16 MB. With the young-generation collections below,
// 48 MB is enough (no full collection in 6 cold downloads after an idle; 32 MB: 3); each MB above it is old garbage
// held before a collection, which the peak RSS pays (64 MB: 148-153 MB in the bench's 1 GiB rows, 48: 143-150).
// --expose-gc: for the young-generation collections of read-buffers.ts.
// --no-maglev: V8's mid-tier compiler, on by default from Node 22 (off on Node 20). On Node 26 it cost ~9 MB of peak
// RSS in the bench's 1 GiB rows (161 -> 152 MB) for no throughput we could measure (bench:hot, 9 rounds: 40.2 and
// 41.7 µs of CPU per cached answer with and without it); TurboFan still compiles the hot paths.
// Start the mirror through this file (npm start, the Docker image, or npx srm-mirror), not with a bare `node`, to
// keep them.
import { main } from './cli.js';

main(process.argv.slice(2), {
  isTTY: process.stdout.isTTY === true,
  write: (text) => void process.stdout.write(text),
  error: (text) => void process.stderr.write(text),
}).then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(`srm-mirror: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  },
);
