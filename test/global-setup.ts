// Every mirror the suite runs writes its log lines to one folder; every credential the suite uses is recorded
// there too. When the whole suite has run, no log line may contain any of them.
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export default async function setup(): Promise<() => Promise<void>> {
  const dir = await mkdtemp(join(tmpdir(), 'srm-mirror-test-logs-'));
  process.env.SRM_TEST_LOG_DIR = dir;
  return async () => {
    const files = await readdir(dir);
    const read = async (suffix: string) => (await Promise.all(files.filter((f) => f.endsWith(suffix)).map((f) => readFile(join(dir, f), 'utf8')))).join('\n');
    const secrets = [...new Set((await read('.secrets')).split('\n').filter((s) => s.length >= 6))];
    const lines = (await read('.log')).split('\n');
    await rm(dir, { recursive: true, force: true });
    const leaks = lines.filter((line) => secrets.some((s) => line.includes(s)));
    const failure =
      leaks.length > 0
        ? `${leaks.length} log line(s) contain a credential, e.g. ${leaks[0]}`
        : secrets.length > 0 && lines.length < 10
          ? 'credentials were used but hardly any log line was captured: the check would prove nothing'
          : undefined;
    // vitest reports an error thrown here but still exits 0: set the exit code as well.
    if (failure) {
      process.exitCode = 1;
      throw new Error(`credential check: ${failure}`);
    }
    console.log(`credential check: ${secrets.length} credentials, ${lines.length} log lines, no leak`);
  };
}
