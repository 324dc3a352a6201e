// The users of hosted packages, and who a request's credentials name. The users file is edited by the CLI while a
// server runs (no LevelDB lock is involved), so a server looks at the file whenever it authenticates and reloads
// it when it was replaced. Secrets are shown once, by the commands that make them, and never logged.
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import { join } from 'node:path';
import { USER_NAME } from '../../config/config.js';
import type { Logger } from '../../log.js';
import { MirrorError } from '../../model/errors.js';
import { NonceMemory, readCredential, signedToken, unauthorized, verifySigned } from './credentials.js';
import { readUsersFile, ROLES, stamp, UsersFileDamagedError, writeUsersFile, type Role, type StoredUser, type UsersFile } from './users-file.js';

export type { Role } from './users-file.js';

export interface User {
  readonly name: string;
  readonly role: Role;
}

export interface UserEntry extends User {
  readonly createdAt: string;
}

interface Known extends User {
  readonly secret: string;
  /** sha256(secret), to compare without leaking timing. */
  readonly digest: Buffer;
}

/** The users file indexed for authentication. */
interface Index {
  readonly stamp: string;
  readonly byName: ReadonlyMap<string, Known>;
  /** Keyed by sha256(secret) (hex), so that looking a secret up takes no time that depends on it. */
  readonly bySecret: ReadonlyMap<string, Known>;
  /** Keyed by the `s` client's token, md5(secret) (hex). */
  readonly byToken: ReadonlyMap<string, Known>;
}

const sha256 = (text: string) => createHash('sha256').update(text, 'utf8').digest();

export class Users {
  private index: Index;
  /** The reload under way, which concurrent requests share. */
  private reloading: Promise<Index> | undefined;
  /** Writes of this process, one after another. */
  private writes: Promise<unknown> = Promise.resolve();
  private readonly nonces = new NonceMemory();
  private warnedMode = false;
  /** The stamp of a damaged file already reported, so that it is logged once, not on every request. */
  private reportedDamage: string | undefined;

  private constructor(
    readonly file: string,
    loaded: UsersFile,
    private readonly now: () => number,
    private readonly log: Logger | undefined,
  ) {
    this.index = this.indexOf(loaded);
  }

  /** The users file is {dataDir}/users.json. Throws UsersFileDamagedError (naming the file) when it is damaged. */
  static async open(dataDir: string, options: { now?: () => number; log?: Logger } = {}): Promise<Users> {
    const file = join(dataDir, 'users.json');
    return new Users(file, await readUsersFile(file), options.now ?? Date.now, options.log);
  }

  /** Adds a user; resolves with its new secret (shown once). */
  async add(name: string, role: Role): Promise<string> {
    if (!USER_NAME.test(name)) {
      throw new MirrorError('bad-request', `invalid user name ${JSON.stringify(name)}: letters, digits, ".", "_" or "-", starting with a letter or digit, at most 64 characters`);
    }
    if (!ROLES.includes(role)) throw new MirrorError('bad-request', `invalid role ${JSON.stringify(role)}: expected one of ${ROLES.join(', ')}`);
    return this.change((users) => {
      if (users.has(name)) throw new MirrorError('conflict', `user ${name} exists already (reset its secret with \`srm-mirror user reset ${name}\`)`);
      const secret = newSecret();
      users.set(name, { role, secret, createdAt: new Date(this.now()).toISOString() });
      return secret;
    });
  }

  async list(): Promise<UserEntry[]> {
    const { users } = await readUsersFile(this.file);
    return [...users].map(([name, u]) => ({ name, role: u.role, createdAt: u.createdAt })).sort((a, b) => (a.name < b.name ? -1 : 1));
  }

  /** false when there was no such user. */
  async remove(name: string): Promise<boolean> {
    return this.change((users) => users.delete(name));
  }

  /** A new secret for an existing user (the old one stops working at once). */
  async reset(name: string): Promise<string> {
    return this.change((users) => {
      const user = users.get(name);
      if (!user) throw new MirrorError('not-found', `no user ${JSON.stringify(name)}`);
      const secret = newSecret();
      users.set(name, { ...user, secret });
      return secret;
    });
  }

  /**
   * Who the request's credentials name. undefined: the request carries no credentials of a user of this mirror
   * (anonymous, or the `s` client's signed headers of an account of the upstream registry, whose token matches
   * no user here: those must pass untouched so the upstream can judge them). Throws MirrorError('unauthorized',
   * reason) when credentials name a user here but are wrong, expired or replayed, and for Basic/token/Bearer/
   * PRIVATE-TOKEN credentials that match no user.
   */
  async authenticate(headers: IncomingHttpHeaders): Promise<User | undefined> {
    const credential = readCredential(headers);
    if (!credential) return undefined;
    const index = await this.current();
    switch (credential.kind) {
      case 'signed': {
        const user = index.byToken.get(credential.token);
        if (!user) return undefined;
        verifySigned(credential, user, this.now(), this.nonces);
        return publicPart(user);
      }
      case 'basic': {
        const user = index.byName.get(credential.name);
        // Hashed and compared even for an unknown name, so that timing tells no names apart.
        const given = sha256(credential.secret);
        const expected = user?.digest ?? sha256(`no such user ${credential.name}`);
        if (!timingSafeEqual(given, expected) || !user) throw unauthorized('wrong user name or secret');
        return publicPart(user);
      }
      case 'secret': {
        const user = index.bySecret.get(sha256(credential.secret).toString('hex'));
        if (!user) throw unauthorized('unknown token');
        return publicPart(user);
      }
    }
  }

  /** The index of the file as it is now: reloaded when the file was replaced since it was read. */
  private async current(): Promise<Index> {
    if ((await stamp(this.file)) === this.index.stamp) return this.index;
    this.reloading ??= readUsersFile(this.file)
      .then((loaded) => (this.index = this.indexOf(loaded)))
      .catch((err: unknown) => {
        if (!(err instanceof UsersFileDamagedError)) throw err;
        if (this.reportedDamage !== err.message) this.log?.error('cannot authenticate users: their file is damaged', { error: err.message });
        this.reportedDamage = err.message;
        throw new MirrorError('internal', 'the users file of this mirror is damaged (see its log)', { cause: err });
      })
      .finally(() => (this.reloading = undefined));
    return this.reloading;
  }

  private indexOf(loaded: UsersFile): Index {
    if (loaded.mode & 0o077 && !this.warnedMode) {
      this.warnedMode = true;
      this.log?.warn('the users file, which holds secrets, can be read by others: run chmod 600 on it', { file: this.file, mode: loaded.mode.toString(8) });
    }
    const byName = new Map<string, Known>();
    const bySecret = new Map<string, Known>();
    const byToken = new Map<string, Known>();
    for (const [name, u] of loaded.users) {
      const known: Known = { name, role: u.role, secret: u.secret, digest: sha256(u.secret) };
      byName.set(name, known);
      bySecret.set(known.digest.toString('hex'), known);
      byToken.set(signedToken(u.secret), known);
    }
    return { stamp: loaded.stamp, byName, bySecret, byToken };
  }

  /**
   * Edits the users as they are on disk now (another process may have changed them), and writes them back when
   * the edit returns other than false. One at a time within this process.
   */
  private change<T>(edit: (users: Map<string, StoredUser>) => T): Promise<T> {
    const run = this.writes.then(async () => {
      const users = new Map((await readUsersFile(this.file)).users);
      const result = edit(users);
      if (result !== false) await writeUsersFile(this.file, users);
      return result;
    });
    this.writes = run.catch(() => undefined);
    return run;
  }
}

function publicPart(user: Known): User {
  return { name: user.name, role: user.role };
}

/** 32 URL-safe characters (192 random bits), never starting with "-" or "_", so it is never taken for an option. */
function newSecret(): string {
  for (;;) {
    const secret = randomBytes(24).toString('base64url');
    if (/^[A-Za-z0-9]/.test(secret)) return secret;
  }
}
