// The node flags on the mirror's first line (its shebang: src/main.ts, and dist/main.js built from it), as the tests
// and the benches run the mirror with them: what `npm start` and the Docker image give it.
import { readFileSync } from 'node:fs';

/** The node flags on `file`'s first line (`#!/usr/bin/env -S node FLAGS`). */
export function shebangFlags(file: string): string[] {
  return (readFileSync(file, 'utf8').split('\n')[0] ?? '').replace(/^#!.*?\bnode\b\s*/, '').split(/\s+/).filter(Boolean);
}
