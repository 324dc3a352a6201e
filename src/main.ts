#!/usr/bin/env node
// Command line: `srm-mirror serve [--flag value ...]`.
import { parseArgs } from 'node:util';
import { ConfigError, loadConfig, SETTINGS } from './config/config.js';
import { createLogger } from './log.js';
import { startServer } from './server.js';

const USAGE = `usage: srm-mirror serve [options]

options (each also settable in a --config JSON file or an environment variable):
  --config FILE            a JSON config file (see config/default.json)
${SETTINGS.filter((s) => s.flag)
  .map((s) => `  --${`${s.flag} ${s.switch ? '' : 'VALUE'}`.padEnd(23)} ${s.help} [${s.env?.join(', ')}]`)
  .join('\n')}`;

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined || command === '--help' || command === '-h' || command === 'help') {
    console.log(USAGE);
    return command === undefined ? 2 : 0;
  }
  if (command !== 'serve') {
    console.error(`srm-mirror: unknown command ${JSON.stringify(command)}\n\n${USAGE}`);
    return 2;
  }
  const options = Object.fromEntries([
    ['config', { type: 'string' as const }],
    ...SETTINGS.filter((s) => s.flag).map((s) => [s.flag!, { type: s.switch ? ('boolean' as const) : ('string' as const) }]),
  ]);
  let config;
  try {
    const { values } = parseArgs({ args: rest, options, strict: true, allowPositionals: false });
    config = loadConfig({ flags: values as Record<string, string | boolean | undefined> });
  } catch (err) {
    if (err instanceof ConfigError || (err as NodeJS.ErrnoException).code?.startsWith('ERR_PARSE_ARGS')) {
      console.error(`srm-mirror: ${(err as Error).message}`);
      return 2;
    }
    throw err;
  }
  const log = createLogger(config.logLevel);
  const running = await startServer(config, log);
  await new Promise<void>((resolve) => {
    const stop = (signal: string) => {
      log.info('shutting down', { signal });
      resolve();
    };
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
  });
  await running.close();
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(`srm-mirror: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  },
);
