#!/usr/bin/env -S node --max-semi-space-size=4 --min-semi-space-size=4
// The srm-mirror executable: see src/cli.ts for the commands. The flags above fix V8's young generation at 4 MB.
// The cap: streaming gigabytes to many clients makes it grow to tens of MB of short-lived garbage otherwise (bench:
// peak RSS 175 MB instead of about 135 MB, same throughput). The floor: after 30 s idle V8 shrinks it to 1 MB (low
// allocation rate), and under load it does not grow back (few survivors), so an idled mirror scavenged twice as often
// as a fresh one (--trace-gc, cached release/latest: 114 answers per scavenge instead of 227; with the floor 232).
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
