// The one error type of the mirror. Every failure that reaches a client is a MirrorError; its kind decides the
// HTTP status (in one place, STATUS below), and faces render its message in their own format.

export type ErrorKind =
  | 'bad-request'
  | 'unauthorized'
  /** The mirror refuses it whoever asks (e.g. an ops endpoint with no admin token configured). */
  | 'forbidden'
  | 'not-found'
  /** It already exists (a user, a hosted version or file) and would be replaced. */
  | 'conflict'
  /** A client's request body is larger than the mirror passes on. */
  | 'too-large'
  /** A client stopped sending its request body. */
  | 'client-timeout'
  | 'not-supported'
  | 'upstream-failed'
  | 'upstream-timeout'
  /** The upstream is known to be down (circuit open), or the mirror is offline. */
  | 'unavailable'
  | 'internal';

const STATUS: Record<ErrorKind, number> = {
  'bad-request': 400,
  unauthorized: 401,
  forbidden: 403,
  'not-found': 404,
  conflict: 409,
  'too-large': 413,
  'client-timeout': 408,
  'not-supported': 501,
  'upstream-failed': 502,
  'upstream-timeout': 504,
  unavailable: 503,
  internal: 500,
};

export class MirrorError extends Error {
  override readonly name = 'MirrorError';
  constructor(
    readonly kind: ErrorKind,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }

  get status(): number {
    return STATUS[this.kind];
  }

  /** Failures of the upstream rather than answers from it: cached data may stand in for them. */
  get isUpstreamFailure(): boolean {
    return this.kind === 'upstream-failed' || this.kind === 'upstream-timeout' || this.kind === 'unavailable';
  }
}

/** Any thrown value as a MirrorError; unknown errors become 'internal' with a message safe to show. */
export function toMirrorError(err: unknown): MirrorError {
  if (err instanceof MirrorError) return err;
  return new MirrorError('internal', 'internal error', { cause: err });
}
