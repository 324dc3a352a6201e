// Turning errors into HTTP answers: one handler shape for every face, each face rendering the message in its
// own format. Internal errors are logged with their cause; a client only ever sees the message, never a stack.
import type { ErrorRequestHandler, Response } from 'express';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { loggedPath, type Logger } from '../log.js';
import { MirrorError, toMirrorError } from '../model/errors.js';

/** Any error as a MirrorError: express's own (malformed URL escapes, ...) carry a 4xx status; ours are MirrorErrors. */
export function httpError(err: unknown): MirrorError {
  const status = (err as { status?: unknown }).status;
  if (!(err instanceof MirrorError) && typeof status === 'number' && status >= 400 && status < 500) {
    return new MirrorError(status === 404 ? 'not-found' : 'bad-request', (err as Error).message);
  }
  return toMirrorError(err);
}

/** Answers a failed request: logged when it is ours or the upstream's, rendered in the face's format. */
export function answerError<R extends ServerResponse>(log: Logger, req: IncomingMessage, res: R, err: unknown, render: (res: R, err: MirrorError) => void): void {
  const e = clientLeft(req, err) ? new MirrorError('bad-request', 'the client went away before its request ended') : httpError(err);
  const path = loggedPath(req.url);
  if (e.kind === 'internal') log.error('internal error', { method: req.method, path, error: describe(e.cause) });
  else if (e.status >= 500) log.warn('upstream problem', { method: req.method, path, error: e.message });
  // Too late for an error answer: cut the connection so the client cannot take a partial body for a whole one.
  if (res.headersSent) res.destroy();
  else render(res, e);
}

export function errorHandler(log: Logger, render: (res: Response, err: MirrorError) => void): ErrorRequestHandler {
  return (err, req, res, _next) => answerError(log, req, res, err, render);
}

/**
 * The request stream failed because the client hung up before its body ended (node's "aborted"): nobody is left to
 * answer, and it is no fault of the mirror's. (A MirrorError, such as a body past its limit, is answered as it is.)
 */
function clientLeft(req: IncomingMessage, err: unknown): boolean {
  return !(err instanceof MirrorError) && req.destroyed && !req.complete;
}

function describe(err: unknown): string {
  return err instanceof Error ? (err.stack ?? err.message) : String(err);
}
