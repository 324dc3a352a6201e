// docs/nginx.md's nginx configuration ("Behind nginx"), as the tests and the benches run it: what is documented is
// what is tested and measured. No dependencies, so that the benches can import it too.
import { readFileSync } from 'node:fs';

const NGINX_DOC = new URL('../../docs/nginx.md', import.meta.url);

/** docs/nginx.md's nginx configuration: the first ```nginx block of the section "Behind nginx". */
export function readmeNginxConfig(): string {
  const text = readFileSync(NGINX_DOC, 'utf8');
  const section = text.slice(text.indexOf('## Behind nginx'));
  const block = /```nginx\n([\s\S]*?)```/.exec(section);
  if (!block) throw new Error('docs/nginx.md has no nginx block under "Behind nginx"');
  return block[1]!;
}

/**
 * docs/nginx.md's configuration for one mirror: nginx listening on 127.0.0.1:`port` in front of the mirror on
 * `mirrorPort`, whose data folder is `dataDir`; `upstream` renames the upstream block (several in one nginx). The
 * tests and the benches run this, so that the documented configuration is the one measured and tested.
 */
export function readmeNginxServer({ mirrorPort, port, dataDir, upstream }: { mirrorPort: number; port: number; dataDir: string; upstream?: string }): string {
  const conf = readmeNginxConfig()
    .replace('server 127.0.0.1:8080;', `server 127.0.0.1:${mirrorPort};`)
    .replace('listen 80;', `listen 127.0.0.1:${port};`)
    .replaceAll('/var/lib/srm-mirror/data/', `${dataDir}/`);
  return upstream ? conf.replaceAll('srm_mirror', upstream) : conf;
}
