#!/usr/bin/env -S node --max-semi-space-size=2
// The srm-mirror executable: see src/cli.ts for the commands. The flag above caps V8's young generation: streaming
// gigabytes to many clients makes it grow to tens of MB of short-lived garbage otherwise (bench: peak RSS 175 MB
// instead of about 135 MB, same throughput); 2 MB rather than 4 took about 4 MB off the heap at every stage of the
// bench and its 1 GiB x 20 peak from ~154 to ~135 MB (issue 13). Start the mirror through this file (npm start, the
// Docker image, or npx srm-mirror), not with a bare `node`, to keep it.
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
