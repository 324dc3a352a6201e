// import.trustedKeys: .pub files or folders of them, resolved against the working folder and checked at start-up.
import { generateKeyPairSync } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { newKeyPair } from '../../src/bundles/manifest.js';
import { readTrustedKeys } from '../../src/bundles/trust.js';
import { loadConfig } from '../../src/config/config.js';
import { removeTempDirs, tempDir } from '../helpers.js';

afterEach(removeTempDirs);

const load = (cwd: string, value: string | undefined) => loadConfig({ cwd, env: value === undefined ? {} : { SRM_MIRROR_IMPORT_TRUSTED_KEYS: value } });

describe('import.trustedKeys', () => {
  it('is empty by default', () => {
    expect(loadConfig({ env: {} }).import.trustedKeys).toEqual([]);
  });

  it('expands folders into their .pub files and resolves paths against the working folder; the keys read back', async () => {
    const cwd = await tempDir();
    await mkdir(join(cwd, 'trusted'));
    const [a, b, c] = [newKeyPair(), newKeyPair(), newKeyPair()];
    await writeFile(join(cwd, 'trusted', 'b.pub'), b.publicPem);
    await writeFile(join(cwd, 'trusted', 'a.pub'), a.publicPem);
    await writeFile(join(cwd, 'trusted', 'README'), 'not a key, not read');
    await writeFile(join(cwd, 'site-c.key'), c.publicPem);
    const config = load(cwd, 'trusted, site-c.key');
    expect(config.import.trustedKeys).toEqual([join(cwd, 'trusted', 'a.pub'), join(cwd, 'trusted', 'b.pub'), join(cwd, 'site-c.key')]);
    expect(readTrustedKeys(config.import.trustedKeys)).toEqual([a.publicPem, b.publicPem, c.publicPem]);
  });

  it('stops start-up naming the setting: a missing path, a folder without keys, something not a key, a key not Ed25519', async () => {
    const cwd = await tempDir();
    await mkdir(join(cwd, 'empty'));
    await writeFile(join(cwd, 'junk.pub'), 'not a key');
    await writeFile(join(cwd, 'rsa.pub'), generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey.export({ type: 'spki', format: 'pem' }));
    const setting = /^invalid setting "import\.trustedKeys": expected a folder of \.pub files or a list of paths to Ed25519 public keys, got /;
    expect(() => load(cwd, 'nowhere')).toThrow(setting);
    expect(() => load(cwd, 'nowhere')).toThrow(/nowhere: no such file or folder/);
    expect(() => load(cwd, 'empty')).toThrow(/empty: a folder without any \.pub file/);
    expect(() => load(cwd, 'junk.pub')).toThrow(/junk\.pub: not a public key/);
    expect(() => load(cwd, 'rsa.pub')).toThrow(/rsa\.pub: not an Ed25519 public key/);
  });
});
