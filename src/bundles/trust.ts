// The public keys an import trusts: Ed25519 keys as SPKI PEM (`.pub` files, as `srm-mirror keygen` writes them),
// named one by one or as folders of them (`import.trustedKeys`, `import --trust`).
import { createPublicKey } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';

/** The key files `paths` name (a folder stands for every `*.pub` file in it); throws saying which path is unusable. */
export function trustedKeyFiles(paths: readonly string[]): string[] {
  return paths.flatMap((path) => {
    let isFolder: boolean;
    try {
      isFolder = statSync(path).isDirectory();
    } catch (err) {
      throw new Error(`${path}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file or folder' : (err as Error).message}`);
    }
    if (!isFolder) return [path];
    const files = readdirSync(path).filter((f) => f.endsWith('.pub')).sort().map((f) => join(path, f));
    if (files.length === 0) throw new Error(`${path}: a folder without any .pub file`);
    return files;
  });
}

/** The PEM text of each key file, each checked to be an Ed25519 public key. */
export function readTrustedKeys(files: readonly string[]): string[] {
  return files.map((file) => {
    let pem: string;
    try {
      pem = readFileSync(file, 'utf8');
    } catch (err) {
      throw new Error(`${file}: not readable (${(err as Error).message})`);
    }
    return checkedKey(pem, file);
  });
}

/** The PEM when it is an Ed25519 public key; throws naming `what` otherwise. */
export function checkedKey(pem: string, what: string): string {
  let type: string | undefined;
  try {
    type = createPublicKey(pem).asymmetricKeyType;
  } catch (err) {
    throw new Error(`${what}: not a public key (${(err as Error).message})`);
  }
  if (type !== 'ed25519') throw new Error(`${what}: not an Ed25519 public key`);
  return pem;
}
