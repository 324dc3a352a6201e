// Who may do what with hosted content, in one place. Roles: a reader reads, a publisher also publishes under its
// own name (and its groups'), an admin does anything. Components are owned by their first publisher; generic
// packages by the owner in their path (a user, or a group in hosted.groups).
import { MirrorError } from '../../model/errors.js';

/** The user a request's credentials name (structurally a Users `User`). */
export interface Caller {
  readonly name: string;
  readonly role: 'reader' | 'publisher' | 'admin';
}

export interface AccessRules {
  readonly anonymousRead: boolean;
  readonly groups: Readonly<Record<string, readonly string[]>>;
}

export class Access {
  constructor(private readonly rules: AccessRules) {}

  /** Whether reading hosted content needs a user (hosted.anonymousRead false). */
  get readNeedsUser(): boolean {
    return !this.rules.anonymousRead;
  }

  /** Reading hosted content: anyone, or any user when hosted.anonymousRead is false. */
  read(caller: Caller | undefined): void {
    if (!this.mayRead(caller)) throw needCredentials('reading hosted packages');
  }

  /** Whether `caller` may read hosted content (read() without the throw). */
  mayRead(caller: Caller | undefined): boolean {
    return caller !== undefined || this.rules.anonymousRead;
  }

  /** Writing as `owner` (a user's or a group's name), or under a name `owner` owns. */
  write(caller: Caller | undefined, owner: string, what: string): Caller {
    if (!caller) throw needCredentials(what);
    if (caller.role === 'admin') return caller;
    if (caller.role === 'reader') throw new MirrorError('forbidden', `${caller.name} may only read (role reader): ${what} needs a publisher`);
    if (caller.name === owner || this.rules.groups[owner]?.includes(caller.name)) return caller;
    throw new MirrorError('forbidden', `${caller.name} may not write as ${owner}: ${what} belongs to ${owner}`);
  }

  /** Publishing something new (the publisher becomes its owner). */
  publish(caller: Caller | undefined, what: string): Caller {
    return this.write(caller, caller?.name ?? '', what);
  }
}

function needCredentials(what: string): MirrorError {
  return new MirrorError('unauthorized', `${what} needs the credentials of a user of this mirror (srm-mirror user add)`);
}
