// The users file, {dataDir}/users.json: read and checked whole, written whole and atomically. It keeps each secret
// as it is (the `s` client's signature is made with the secret itself, so no hash of it would do), hence mode 0600
// from its first byte. A file that is not what this module writes is refused, never replaced.
import { randomBytes } from 'node:crypto';
import { mkdir, open, rename, rm, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { USER_NAME } from '../../config/config.js';

export type Role = 'reader' | 'publisher' | 'admin';
export const ROLES: readonly Role[] = ['reader', 'publisher', 'admin'];

export interface StoredUser {
  readonly role: Role;
  readonly secret: string;
  readonly createdAt: string;
}

export interface UsersFile {
  readonly users: ReadonlyMap<string, StoredUser>;
  /** Identifies this version of the file (see stamp()). */
  readonly stamp: string;
  /** Permission bits. */
  readonly mode: number;
}

const VERSION = 1;

export class UsersFileDamagedError extends Error {
  override readonly name = 'UsersFileDamagedError';
  constructor(
    readonly file: string,
    problem: string,
  ) {
    super(`the users file ${file} is damaged (${problem}): fix or move it away; srm-mirror does not replace it`);
  }
}

/**
 * What changes whenever the file is replaced. Every write is a rename of a new file, so the inode alone nearly
 * does; but a freed inode can be reused by a later write, hence size and times too.
 */
export async function stamp(file: string): Promise<string> {
  try {
    const s = await stat(file, { bigint: true });
    return `${s.ino}:${s.size}:${s.mtimeNs}:${s.ctimeNs}`;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 'none';
    throw err;
  }
}

/** Reads and checks the file; no file is no users. Throws UsersFileDamagedError when it is not a users file. */
export async function readUsersFile(file: string): Promise<UsersFile> {
  let handle;
  try {
    handle = await open(file, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { users: new Map(), stamp: 'none', mode: 0o600 };
    throw err;
  }
  try {
    // The stamp of the very file read (a writer replaces it, never changes it in place).
    const s = await handle.stat({ bigint: true });
    const text = await handle.readFile('utf8');
    return { users: parse(file, text), stamp: `${s.ino}:${s.size}:${s.mtimeNs}:${s.ctimeNs}`, mode: Number(s.mode) & 0o777 };
  } finally {
    await handle.close();
  }
}

function parse(file: string, text: string): Map<string, StoredUser> {
  const damaged = (problem: string) => new UsersFileDamagedError(file, problem);
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch {
    throw damaged('not valid JSON'); // not JSON.parse's message: it quotes the text, which holds secrets
  }
  if (!isObject(data)) throw damaged('not a JSON object');
  if (data.version !== VERSION) throw damaged(`"version" is ${JSON.stringify(data.version)}, expected ${VERSION}`);
  if (!isObject(data.users)) throw damaged('"users" is not an object');
  const users = new Map<string, StoredUser>();
  const secrets = new Set<string>();
  for (const [name, entry] of Object.entries(data.users)) {
    if (!USER_NAME.test(name)) throw damaged(`invalid user name ${JSON.stringify(name)}`);
    if (!isObject(entry)) throw damaged(`user ${name} is not an object`);
    const { role, secret, createdAt } = entry;
    if (!ROLES.includes(role as Role)) throw damaged(`user ${name} has role ${JSON.stringify(role)}, expected one of ${ROLES.join(', ')}`);
    // Never quoted: a secret in an error message would end up on a terminal or in a log.
    if (typeof secret !== 'string' || !/^[\x21-\x7e]{16,}$/.test(secret)) throw damaged(`user ${name} has no valid secret (16 or more visible ASCII characters)`);
    if (secrets.has(secret)) throw damaged(`user ${name} has the secret of another user`);
    if (typeof createdAt !== 'string') throw damaged(`user ${name} has no createdAt`);
    secrets.add(secret);
    users.set(name, { role: role as Role, secret, createdAt });
  }
  return users;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * Replaces the file with these users: a temp file beside it (mode 0600), fsynced, renamed over it, and the folder
 * fsynced, so that a crash leaves either the old file or the new one, and a removed user stays removed.
 */
export async function writeUsersFile(file: string, users: ReadonlyMap<string, StoredUser>): Promise<void> {
  const folder = dirname(file);
  await mkdir(folder, { recursive: true });
  const sorted = [...users].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  const text = `${JSON.stringify({ version: VERSION, users: Object.fromEntries(sorted) }, null, 2)}\n`;
  const temp = join(folder, `.users.json.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
  try {
    const handle = await open(temp, 'wx', 0o600);
    try {
      await handle.chmod(0o600); // whatever the umask
      await handle.writeFile(text, 'utf8');
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(temp, file);
  } catch (err) {
    await rm(temp, { force: true });
    throw err;
  }
  const dir = await open(folder, 'r');
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
}
