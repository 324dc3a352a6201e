#!/usr/bin/env node
// The srm-mirror executable: see src/cli.ts for the commands.
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
