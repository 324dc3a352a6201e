// Generic packages over HTTP, in the two dialects clients already speak, over one storage (GenericPackages): a
// file put through one is got through the other.
//
//   Gitea   /api/packages/{owner}/generic/{name}/{version}/{file}   PUT, GET, HEAD, DELETE; DELETE .../{version}
//           /api/v1/packages/{owner}/generic/{name}/{version}[/files]   the package API (with its download count)
//   GitLab  /api/v4/projects/{id}/packages/generic/{name}/{version}/{file}   PUT, GET, HEAD; {id} names the owner
//
// Each validates and answers as its original does (PROTOCOL.md §3): Gitea in plain text, its refusals of writes all
// 401 with a Basic challenge (routers/api/packages/api.go, reqPackageAccess); GitLab in JSON, `{"error": ...}` for a
// parameter that fails validation and `{"message": "<status> ..."}` otherwise (lib/api/generic_packages.rb,
// lib/api/api.rb). Paths are parsed here from the raw segments, so that encoded traversal is seen decoded.
import { Router, type NextFunction, type Request, type Response } from 'express';
import { STATUS_CODES, type IncomingMessage } from 'node:http';
import { USER_NAME } from '../config/config.js';
import type { Caller, Access } from '../core/hosted/access.js';
import type { Duplicates, GenericCoords, GenericFile, GenericPackages, GenericVersion } from '../core/hosted/generic-packages.js';
import type { Logger } from '../log.js';
import { MirrorError } from '../model/errors.js';
import * as valid from '../model/validate.js';
import { sendArchive } from './archive-response.js';
import { errorHandler } from './errors.js';
import { sendJson } from './json.js';
import { guardedBody, type BodyLimits } from './request-body.js';

/** Who a request's credentials name: undefined when it has none; throws 401 (MirrorError) when they are wrong. */
export type Authenticate = (req: IncomingMessage) => Promise<Caller | undefined>;

export interface GenericFaceOptions {
  readonly packages: GenericPackages;
  readonly access: Access;
  readonly authenticate: Authenticate;
  readonly log: Logger;
  /** Upload bodies: hosted.maxFileSize and the idle timeout. */
  readonly body: BodyLimits;
  /** hosted.rejectDuplicates: GitLab's API refuses a file name already in the version. */
  readonly rejectDuplicates: boolean;
}

const REALM = 'Basic realm="srm-mirror"';

// ---- Gitea -------------------------------------------------------------------------------------------------------

// routers/api/packages/generic/generic.go
const GITEA_NAME = /^[-_+.\w]+$/;
const GITEA_FILE = /^[-_+=:;.()[\]{}~!@#$%^& \w]+$/;

/** Gitea's checks of an upload, in its order; the message is Gitea's. */
function giteaInvalid(at: GenericCoords, fileName: string): string | undefined {
  const name = at.name;
  if (!GITEA_NAME.test(name) || name === '..' || (name.length === 1 && !/^[A-Za-z0-9]$/.test(name))) return 'invalid package name';
  if (!GITEA_FILE.test(fileName) || fileName.trim() !== fileName || fileName === '.' || fileName === '..') return 'invalid filename';
  if (at.version === '' || at.version.trim() !== at.version) return 'invalid package version';
  return undefined;
}

/** /{owner}/generic/{name}/{version}[/{file}] → where, and the file when named. */
function giteaRoute(path: string): { at: GenericCoords; file: string | undefined } | undefined {
  const segs = path.split('/').slice(1).map(valid.decodeSegment);
  if ((segs.length !== 4 && segs.length !== 5) || segs[1] !== 'generic') return undefined;
  const [owner, , name, version, file] = segs as [string, string, string, string, string | undefined];
  return { at: { owner: ownerName(owner, 'user does not exist'), name, version }, file };
}

/** PUT/GET/HEAD/DELETE of files, DELETE of versions; mounted at /api/packages. */
export function giteaGenericFace(o: GenericFaceOptions): Router {
  const router = Router();
  // Gitea answers every refused write 401 with a challenge, a signed-in user without the permission included.
  const mayWrite = (caller: Caller | undefined, at: GenericCoords) => {
    try {
      o.access.write(caller, at.owner, `writing packages of ${at.owner}`);
    } catch (err) {
      if (err instanceof MirrorError && err.kind === 'forbidden') throw new MirrorError('unauthorized', err.message);
      throw err;
    }
  };
  router.use(async (req: Request, res: Response) => {
    const route = giteaRoute(req.path);
    if (!route) throw new MirrorError('not-found', `no such endpoint: ${req.method} ${req.baseUrl}${req.path}`);
    const { at, file } = route;
    const caller = await o.authenticate(req);
    if (file === undefined) {
      if (req.method !== 'DELETE') throw new MirrorError('not-found', `no such endpoint: ${req.method} on a package version`);
      mayWrite(caller, at);
      if (!(await o.packages.deleteVersion(at))) throw new MirrorError('not-found', 'package does not exist');
      res.status(204).end();
      return;
    }
    switch (req.method) {
      case 'PUT': {
        mayWrite(caller, at);
        const invalid = giteaInvalid(at, file);
        if (invalid) throw new MirrorError('bad-request', invalid);
        if (await o.packages.file(at, file)) throw new MirrorError('conflict', 'package file already exists'); // before its body is stored
        await receive(o, req, at, file, 'refuse');
        res.status(201).end();
        return;
      }
      case 'GET':
      case 'HEAD':
        o.access.read(caller);
        return serve(o, req, res, caller, at, file, (version) => (version ? 'package file does not exist' : 'package does not exist'));
      case 'DELETE':
        mayWrite(caller, at);
        if (!(await o.packages.deleteFile(at, file))) throw new MirrorError('not-found', 'package file does not exist');
        res.status(204).end();
        return;
      default:
        throw new MirrorError('not-found', `no such endpoint: ${req.method} on a package file`);
    }
  });
  router.use(
    errorHandler(o.log, (res, e) => {
      closeIfUnread(res);
      if (e.status === 401) res.setHeader('WWW-Authenticate', REALM);
      res.status(e.status).type('text/plain; charset=utf-8').send(e.message);
    }),
  );
  return router;
}

/**
 * Gitea's package API for generic versions; mounted at /api/v1/packages. `GET {owner}/generic/{name}/{version}` is
 * Gitea's Package (id, owner, type, name, version, created_at, ...) plus `download_count` and `files`, which Gitea
 * shows only in its web pages; `.../files` is Gitea's list of PackageFile (sha256 only: no other digest is kept).
 */
export function giteaPackageApi(o: GenericFaceOptions): Router {
  const router = Router();
  router.use(async (req: Request, res: Response, next: NextFunction) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') return next();
    const segs = req.path.split('/').slice(1).map(valid.decodeSegment);
    const files = segs.length === 5 && segs[4] === 'files';
    if ((segs.length !== 4 && !files) || segs[1] !== 'generic') throw new MirrorError('not-found', 'The target couldn\'t be found.');
    const at: GenericCoords = { owner: ownerName(segs[0]!, 'user does not exist'), name: segs[2]!, version: segs[3]! };
    o.access.read(await o.authenticate(req));
    const version = await o.packages.version(at);
    if (!version) throw new MirrorError('not-found', 'package does not exist');
    const fileJson = (f: GenericFile) => ({ id: f.id, size: f.size, name: f.name, sha256: f.digest });
    if (files) return sendJson(res, 200, JSON.stringify(version.files.map(fileJson)));
    const pkg = {
      id: version.id,
      owner: { login: at.owner },
      repository: null,
      creator: null,
      type: 'generic',
      name: at.name,
      version: at.version,
      html_url: '',
      created_at: version.createdAt,
      download_count: await o.packages.downloads(at),
      files: version.files.map(fileJson),
    };
    sendJson(res, 200, JSON.stringify(pkg));
  });
  router.use((req: Request) => {
    throw new MirrorError('not-found', `no such endpoint: ${req.method} ${req.baseUrl}${req.path}`);
  });
  router.use(errorHandler(o.log, (res, e) => sendJson(res, e.status, JSON.stringify({ message: e.message }))));
  return router;
}

// ---- GitLab ------------------------------------------------------------------------------------------------------

// lib/gitlab/regex/packages.rb (generic_package_*_regex) and spec/requests/api/generic_packages_spec.rb (a file name
// may hold "~" and "@", but not at either end).
const GITLAB_NAME = /^[A-Za-z0-9._+-]+$/;
const GITLAB_VERSION = /^(?!.*\.\.)[\w+.-]+$/;
const GITLAB_FILE = /^(?![~@])[A-Za-z0-9._+~@-]+(?<![~@])$/;
/** Gitlab::PathTraversal: ".", "..", or ".." as a part of a path. */
const TRAVERSAL = /^\.{1,2}$|^\.\.[/\\]|[/\\]\.\.$|[/\\]\.\.[/\\]|\n/;

/** A parameter that fails GitLab's validation: answered `{"error": "<param> ..."}` as Grape does. */
class ParamError extends MirrorError {
  constructor(message: string) {
    super('bad-request', message);
  }
}

function gitlabChecked(param: string, value: string, pattern: RegExp, isPath: boolean): string {
  if (isPath && TRAVERSAL.test(value)) throw new ParamError(`${param} should be a valid file path`);
  if (!pattern.test(value)) throw new ParamError(`${param} is invalid`);
  return value;
}

/** {id}/packages/generic/{name}/{version}/{file}, checked; undefined when the path is no generic-package path. */
function gitlabRoute(path: string): { at: GenericCoords; file: string } | undefined {
  const segs = path.split('/').slice(1).map(valid.decodeSegment);
  if (segs.length < 4 || segs[1] !== 'packages' || segs[2] !== 'generic') return undefined;
  const rest = segs.slice(3);
  if (rest.length !== 3) {
    // A ".." between the slashes of the path itself (sent unnormalized) is traversal too, not another route.
    if (rest.some((s) => s === '.' || s === '..')) throw new ParamError('path should be a valid file path');
    return undefined; // (the {path} newer GitLab allows between version and file is not supported here)
  }
  // The parameters first, then the project, as GitLab does (Grape validates before the endpoint looks it up).
  const name = gitlabChecked('package_name', rest[0]!, GITLAB_NAME, true);
  const version = gitlabChecked('package_version', rest[1]!, GITLAB_VERSION, false);
  const file = gitlabChecked('file_name', rest[2]!, GITLAB_FILE, true);
  return { at: { owner: gitlabProject(segs[0]!), name, version }, file };
}

/** GitLab's spelling of an error (`bad_request!(reason)`, `forbidden!`, ...): "<status> <text>[ - reason]". */
function gitlabMessage(e: MirrorError): string {
  if (e.status === 401) return '401 Unauthorized';
  if (e.status === 404) return `404 ${e.message || 'Not found'}`; // not_found!('Project'): "404 Project Not Found"
  const text = e.status === 400 ? 'Bad request' : (STATUS_CODES[e.status] ?? 'Error');
  return e.message ? `${e.status} ${text} - ${e.message}` : `${e.status} ${text}`;
}

/** PUT/GET/HEAD of files; mounted at /api/v4/projects. */
export function gitlabGenericFace(o: GenericFaceOptions): Router {
  const router = Router();
  const duplicates: Duplicates = o.rejectDuplicates ? 'refuse' : 'keep';
  router.use(async (req: Request, res: Response, next: NextFunction) => {
    if (req.method === 'PUT') {
      // GitLab authenticates writes before it validates anything (authenticate_non_get!).
      const caller = await o.authenticate(req);
      if (!caller) throw new MirrorError('unauthorized', 'writing packages needs credentials');
      const route = gitlabRoute(req.path);
      if (!route) return next();
      const { at, file } = route;
      const select = queryParam(req, 'select', ['package_file']);
      queryParam(req, 'status', ['default', 'hidden']);
      o.access.write(caller, at.owner, `writing packages of ${at.owner}`);
      if (o.rejectDuplicates && (await o.packages.file(at, file))) throw duplicate(); // before its body is stored
      const added = await receive(o, req, at, file, duplicates).catch((err: unknown) => {
        throw err instanceof MirrorError && err.kind === 'conflict' ? duplicate() : err;
      });
      if (select === 'package_file') return sendJson(res, 200, JSON.stringify(packageFileJson(added.version, added.file)));
      return sendJson(res, 201, JSON.stringify({ message: '201 Created' }));
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') return next();
    const route = gitlabRoute(req.path);
    if (!route) return next();
    const caller = await o.authenticate(req);
    o.access.read(caller);
    return serve(o, req, res, caller, route.at, route.file, () => '', (file) => ({ 'X-Checksum-SHA256': file.digest }));
  });
  router.use(() => {
    throw new MirrorError('not-found', 'Not Found');
  });
  router.use(
    errorHandler(o.log, (res, e) => {
      closeIfUnread(res);
      const body = e instanceof ParamError ? { error: e.message } : { message: gitlabMessage(e) };
      sendJson(res, e.status, JSON.stringify(body));
    }),
  );
  return router;
}

/** GitLab's {id}: "the ID or URL-encoded path of the project". Here a project is its owner, a user or a group. */
function gitlabProject(id: string): string {
  return ownerName(id, 'Project Not Found');
}

function duplicate(): MirrorError {
  return new MirrorError('bad-request', 'Duplicate package is not allowed');
}

/** GitLab's PackageFile entity (lib/api/entities/package_file.rb); only the sha256 of a file is kept. */
function packageFileJson(version: GenericVersion, file: GenericFile) {
  return {
    id: file.id,
    package_id: version.id,
    created_at: file.createdAt,
    file_name: file.name,
    size: file.size,
    file_md5: null,
    file_sha1: null,
    file_sha256: file.digest,
  };
}

/** A query parameter GitLab restricts to some values (Grape's `values:`). */
function queryParam(req: Request, name: string, values: readonly string[]): string | undefined {
  const value = req.query[name];
  if (value === undefined) return undefined;
  if (typeof value !== 'string' || !values.includes(value)) throw new ParamError(`${name} does not have a valid value`);
  return value;
}

// ---- both --------------------------------------------------------------------------------------------------------

/** An owner in a path: a user's or a group's name (never a "/"); anything else names nobody (404). */
function ownerName(value: string, notFound: string): string {
  if (!USER_NAME.test(value)) throw new MirrorError('not-found', notFound);
  return value;
}

/**
 * An error answered before the request's body was all read (a refused upload) closes the connection: it cannot
 * carry another request, and reading the rest only to drop it would let a refused client go on sending.
 */
function closeIfUnread(res: Response): void {
  if (!res.req.complete) res.setHeader('Connection', 'close');
}

/**
 * Streams the body into a temp file (refused at once when its Content-Length is past a limit) and adds it;
 * resolves once the change is durable (fsynced), so that a 201 is never sent for what a crash could lose.
 */
async function receive(o: GenericFaceOptions, req: Request, at: GenericCoords, fileName: string, duplicates: Duplicates) {
  const guard = guardedBody(req, o.body);
  const upload = await o.packages.receive(guard, contentLength(req)).catch((err: unknown) => {
    req.unpipe(guard);
    throw guard.failure ?? err; // (a client gone mid-body is answerError's to tell)
  });
  return o.packages.add(at, fileName, upload, duplicates);
}

function contentLength(req: Request): number | undefined {
  const value = req.headers['content-length'];
  return value !== undefined && /^\d+$/.test(value) ? Number(value) : undefined;
}

/**
 * Sends the newest file of that name (Range, conditional requests, Last-Modified), or 404 with `missing(version)`'s
 * message. A GET of the whole file, or of a range from its first byte, counts a download of the version (a download
 * resumed or split into ranges counts once); a HEAD, a 304 or a failed request does not.
 */
async function serve(
  o: GenericFaceOptions,
  req: Request,
  res: Response,
  caller: Caller | undefined,
  at: GenericCoords,
  fileName: string,
  missing: (version: GenericVersion | undefined) => string,
  headers: (file: GenericFile) => Record<string, string> = () => ({}),
): Promise<void> {
  const found = await o.packages.open(at, fileName);
  if (!found) throw new MirrorError('not-found', missing(await o.packages.version(at)));
  for (const [k, v] of Object.entries(headers(found.file))) res.setHeader(k, v);
  await sendArchive(req, res, found.handle, found.file.name, {
    contentType: 'application/octet-stream',
    lastModified: new Date(found.file.createdAt),
    // The bytes under a file's URL can change (deleted and put again; GitLab serves the newest duplicate): ask every
    // time, cheaply (ETag). What a caller's credentials opened is theirs alone.
    cacheControl: caller ? 'private, no-cache' : 'no-cache',
  });
  const fromStart = res.statusCode === 200 || (res.statusCode === 206 && String(res.getHeader('Content-Range')).startsWith('bytes 0-'));
  if (req.method === 'GET' && fromStart) o.packages.countDownload(at);
}
