/**
 * @module
 * The `jth` command line. `main(argv)` parses with commander and returns the exit code; every command
 * loads its own modules lazily, so `jth invoke` does not pay for the server, and `jth jobs` does not pay
 * for esbuild. Exit codes are listed in `./exit.ts`.
 */
import { existsSync } from 'node:fs';
import { Command, CommanderError, Option } from 'commander';
import { ErrorCode, JthError } from '../core/errors.ts';
import { formatBytes, formatDuration } from '../core/units.ts';
import { VERSION } from '../core/version.ts';
import type { ConnectionFlags } from './connection.ts';
import { CliError, ExitCode } from './exit.ts';
import { defaultIo, type Io, reportError, useColor, writeOut } from './output.ts';

export { ExitCode } from './exit.ts';

/**
 * Import a heavy part of jth by name. From `dist/cli.mjs` the prebuilt `dist/<name>.mjs` is used when
 * present; otherwise the TypeScript source is loaded through tsx. The specifier is computed so that
 * bundling the CLI does not inline the server.
 */
export async function loadPart<T>(name: 'server' | 'doctor' | 'pki'): Promise<T> {
  const source = {
    server: '../server/mod.ts',
    doctor: '../server/doctor.ts',
    pki: '../plugins/auth-mtls/pki.ts',
  }[name];
  if (import.meta.url.endsWith('.mjs')) {
    const built = new URL(`./${name}.mjs`, import.meta.url);
    if (existsSync(built)) return (await import(built.href)) as T;
    const { register } = await import('tsx/esm/api');
    register();
  }
  const url = new URL(source, import.meta.url);
  if (!existsSync(url)) {
    throw new CliError(
      ErrorCode.HOST_UNSUPPORTED,
      `This build of jth has no ${name} module (${url.pathname})`,
      ExitCode.failure,
      {
        hint: 'Run from a full checkout of jth, or rebuild with `npm run build`',
      },
    );
  }
  return (await import(url.href)) as T;
}

function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

type PkiModule = typeof import('../plugins/auth-mtls/pki.ts');

/** Print what a pki function returned as `key: value` lines (dates in ISO form), or as JSON. */
async function printPkiResult(io: Io, value: object, json: boolean): Promise<void> {
  if (json) {
    await writeOut(io.stdout, `${JSON.stringify(value, null, 2)}\n`);
    return;
  }
  const lines = Object.entries(value).map(([k, v]) => {
    const text = v instanceof Date ? v.toISOString() : typeof v === 'string' ? v : JSON.stringify(v);
    return k === 'p12Password' ? `${k}: ${text}  (shown only this once)` : `${k}: ${text}`;
  });
  await writeOut(io.stdout, `${lines.join('\n')}\n`);
}

function parseDays(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) {
    throw new CliError(ErrorCode.BAD_REQUEST, `Invalid --days "${value}"`, ExitCode.usage, {
      hint: 'Use a whole number of days, e.g. 365',
    });
  }
  return n;
}

/**
 * The connection flags, on each command that talks to a server. They are not global: `jth pki init
 * --key TYPE` has a `--key` of its own, and a global one would swallow it.
 */
function withConnection(cmd: Command): Command {
  return cmd
    .option('--server <url>', 'server URL (env JTH_SERVER)')
    .option('--cert <file>', 'client certificate, PEM (env JTH_CERT)')
    .option('--key <file>', 'client key, PEM (env JTH_KEY)')
    .option('--ca <file>', 'CA certificate that signed the server, PEM (env JTH_CA)')
    .option(
      '--profile <file>',
      'profile JSON { server, cert, key, ca } (env JTH_PROFILE, default ~/.config/jth/profile.json)',
    );
}

function buildProgram(io: Io, setCode: (code: number) => void): Command {
  const program = new Command('jth')
    .description('Jobber the Hut: run functions and scripts on a jth server')
    .version(VERSION, '-V, --version')
    .addHelpText(
      'after',
      '\nCommands that talk to a server take --server URL --cert FILE --key FILE --ca FILE --profile FILE\n' +
        '(or JTH_SERVER, JTH_CERT, JTH_KEY, JTH_CA, JTH_PROFILE; see cli/README.md).',
    )
    .showHelpAfterError('(run `jth --help` for usage)')
    .exitOverride()
    .configureOutput({
      writeOut: (s) => io.stdout.write(s),
      writeErr: (s) => io.stderr.write(s),
      // Usage errors read like every other error of the CLI.
      outputError: (s, write) => write(s.replace(/^error: /, 'jth: ')),
    });

  const flagsOf = (cmd: Command): ConnectionFlags => {
    const o = cmd.opts<ConnectionFlags>();
    return { server: o.server, cert: o.cert, key: o.key, ca: o.ca, profile: o.profile };
  };

  program
    .command('server')
    .description('start the jth server (SIGHUP reloads TLS, log level and limits)')
    .option('--config <file>', 'config file (default: built-in defaults)')
    .option('--port <n>', 'listen port, overriding the config (0 = any free port)')
    .option('--host <addr>', 'listen address, overriding the config')
    .option('--check-config', 'load and check the config, print what the server would run with, and exit')
    .option('--json', 'with --check-config: JSON output')
    .action(
      async (opts: {
        config?: string;
        port?: string;
        host?: string;
        checkConfig?: boolean;
        json?: boolean;
      }) => {
        type ServerModule = typeof import('../server/mod.ts');
        const port = opts.port === undefined ? undefined : Number(opts.port);
        if (port !== undefined && (!Number.isInteger(port) || port < 0 || port > 65535)) {
          throw new CliError(ErrorCode.BAD_REQUEST, `Invalid --port "${opts.port}"`, ExitCode.usage, {
            hint: 'Use a port number from 0 to 65535',
          });
        }
        const where = {
          ...(opts.config ? { configPath: opts.config } : {}),
          ...(port !== undefined ? { port } : {}),
          ...(opts.host ? { host: opts.host } : {}),
        };
        const m = await loadPart<ServerModule>('server');
        if (opts.checkConfig) {
          setCode(await checkConfig(io, () => m.checkConfig(where), opts.json === true));
          return;
        }
        const server = await m.startServer({ closeInheritedFds: true, ...where });
        // The server logs its notes itself; the addresses are repeated for the person who started it.
        io.stderr.write(`jth: listening on ${server.url}\n`);
        if (server.opsUrl) io.stderr.write(`jth: health and metrics on ${server.opsUrl}\n`);
        if (server.devPki) io.stderr.write(devPkiLines(server.url, server.devPki));
        const shutdown = () => {
          process.off('SIGINT', shutdown);
          process.off('SIGTERM', shutdown);
          process.off('SIGHUP', reload);
          server.close().catch((err: unknown) => reportError(io, err));
        };
        // The server logs what a reload applied and refused.
        const reload = () => void server.reload();
        process.on('SIGINT', shutdown);
        process.on('SIGTERM', shutdown);
        process.on('SIGHUP', reload);
        setCode(ExitCode.ok);
      },
    );

  withConnection(program.command('version'))
    .description("print the client's version and the server's")
    .option('--client', "only the client's version (no connection)")
    .option('--json', 'JSON output')
    .action(async (opts: { client?: boolean; json?: boolean }, cmd: Command) => {
      setCode(await version(io, { ...opts, flags: flagsOf(cmd) }));
    });

  withConnection(program.command('invoke'))
    .description('bundle FILE, run it on the server, stream its output and exit with its exit code')
    .argument('<file>', 'entry file (.js, .mjs, .ts); a default export makes it a function job')
    .option('--data <json|@file>', 'input: a function argument or a script stdin (@- reads stdin)')
    .option('--path <path>', 'request path, for a module exporting { fetch }')
    .option('--method <method>', 'request method (default GET)')
    .option('--header <k:v>', 'request header, repeatable', collect)
    .addOption(new Option('--runtime <name>', 'runtime').choices(['node', 'deno']))
    .option('--timeout <duration>', 'wall-clock timeout, e.g. 30s, 2m')
    .option('--memory <size>', 'memory limit, e.g. 256M')
    .option('--cpus <n>', 'CPU limit in cores, e.g. 0.5')
    .option('--network', 'allow the job to reach the network')
    .option('--discard-artifacts', 'do not keep the files the job writes to $JTH_ARTIFACTS')
    .option('--detach', 'print the job id and exit without waiting')
    .option('--json', 'print the final job record as JSON on stdout (job output all goes to stderr)')
    .addHelpText(
      'after',
      "\nExit codes: the job's own code; 124 timed out, 240 out of memory, 241 pids exhausted, 242 stopped,\n243 infra error, 128+N killed by signal N; 2 usage, 65 bundle error, 69 cannot connect, 75 retry later,\n77 TLS or auth refused.",
    )
    .action(async (file: string, opts, cmd: Command) => {
      const { invoke } = await import('./invoke.ts');
      setCode(await invoke(file, opts, { io, flags: flagsOf(cmd) }));
    });

  withConnection(program.command('jobs'))
    .description('list your jobs (a table on a TTY, tab-separated when piped)')
    .option('--all', "all users' jobs (admins)")
    .option('--json', 'JSON output')
    .action(async (opts, cmd: Command) => {
      const { listJobs } = await import('./jobs.ts');
      setCode(await listJobs(opts, { io, flags: flagsOf(cmd) }));
    });

  withConnection(program.command('status'))
    .description('show one job')
    .argument('<id>')
    .option(
      '--usage',
      'also its cpu, memory and tasks over time, as sampled while it ran (with --json: { job, usage })',
    )
    .option('--json', 'JSON output')
    .action(async (id: string, opts, cmd: Command) => {
      const { status } = await import('./jobs.ts');
      setCode(await status(id, opts, { io, flags: flagsOf(cmd) }));
    });

  withConnection(program.command('logs'))
    .description("print a job's output (stdout to stdout, stderr to stderr)")
    .argument('<id>')
    .option('-f, --follow', 'keep streaming until the job ends')
    .option('--offset <n>', 'start at this byte offset of the log (a frame boundary)')
    .action(async (id: string, opts: { follow?: boolean; offset?: string }, cmd: Command) => {
      const [{ logs }, { parseOffset }] = await Promise.all([import('./jobs.ts'), import('./parse.ts')]);
      const offset = opts.offset === undefined ? 0 : parseOffset(opts.offset);
      setCode(await logs(id, { follow: opts.follow === true, offset }, { io, flags: flagsOf(cmd) }));
    });

  withConnection(program.command('stop'))
    .description('stop a job')
    .argument('<id>')
    .option('--json', 'JSON output')
    .action(async (id: string, opts, cmd: Command) => {
      const { stop } = await import('./jobs.ts');
      setCode(await stop(id, opts, { io, flags: flagsOf(cmd) }));
    });

  withConnection(program.command('artifacts'))
    .description("list a job's artifacts, or download them all with --out")
    .argument('<id>')
    .option('--out <dir>', 'download every artifact into DIR')
    .option('--json', 'JSON output')
    .action(async (id: string, opts, cmd: Command) => {
      const { artifacts } = await import('./jobs.ts');
      setCode(await artifacts(id, opts, { io, flags: flagsOf(cmd) }));
    });

  const pki = program.command('pki').description('manage the certificate authority for mutual TLS');
  pki
    .command('init')
    .description('create a CA')
    .requiredOption('--dir <dir>', 'PKI directory')
    .addOption(
      new Option('--key <type>', 'key type')
        .choices(['ec-p256', 'ec-p384', 'rsa-2048', 'rsa-3072', 'rsa-4096'])
        .default('ec-p256'),
    )
    .option('--days <n>', 'validity in days', parseDays)
    .option('--force', 'replace an existing CA')
    .option('--json', 'JSON output')
    .action(async (opts: { dir: string; key: string; days?: number; force?: boolean; json?: boolean }) => {
      const m = await loadPart<PkiModule>('pki');
      const r = await m.initCa({
        dir: opts.dir,
        key: opts.key,
        force: opts.force === true,
        ...(opts.days ? { days: opts.days } : {}),
      });
      await printPkiResult(io, r, opts.json === true);
      setCode(ExitCode.ok);
    });
  pki
    .command('server')
    .description('issue a server certificate')
    .requiredOption('--dir <dir>', 'PKI directory')
    .option('--host <name>', 'DNS name, repeatable', collect)
    .option('--ip <addr>', 'IP address, repeatable', collect)
    .option('--days <n>', 'validity in days', parseDays)
    .option('--json', 'JSON output')
    .action(async (opts: { dir: string; host?: string[]; ip?: string[]; days?: number; json?: boolean }) => {
      if (!opts.host?.length && !opts.ip?.length) {
        throw new CliError(ErrorCode.BAD_REQUEST, 'A server certificate needs a name', ExitCode.usage, {
          hint: 'Pass --host NAME and/or --ip ADDR',
        });
      }
      const m = await loadPart<PkiModule>('pki');
      const r = await m.issueServer({
        dir: opts.dir,
        hosts: opts.host ?? [],
        ips: opts.ip ?? [],
        ...(opts.days ? { days: opts.days } : {}),
      });
      await printPkiResult(io, r, opts.json === true);
      setCode(ExitCode.ok);
    });
  pki
    .command('client')
    .description('issue a client certificate for a user')
    .requiredOption('--dir <dir>', 'PKI directory')
    .requiredOption('--user <name>', 'user name')
    .addOption(new Option('--role <role>', 'role').choices(['user', 'admin']).default('user'))
    .option('--days <n>', 'validity in days', parseDays)
    .option('--p12', 'also write a PKCS#12 bundle')
    .option('--json', 'JSON output')
    .action(
      async (opts: {
        dir: string;
        user: string;
        role: 'user' | 'admin';
        days?: number;
        p12?: boolean;
        json?: boolean;
      }) => {
        const m = await loadPart<PkiModule>('pki');
        const r = await m.issueClient({
          dir: opts.dir,
          user: opts.user,
          role: opts.role,
          p12: opts.p12 === true,
          ...(opts.days ? { days: opts.days } : {}),
        });
        await printPkiResult(io, r, opts.json === true);
        setCode(ExitCode.ok);
      },
    );
  pki
    .command('revoke')
    .description('revoke a certificate by serial number: add it to the deny list and sign a new CRL')
    .requiredOption('--dir <dir>', 'PKI directory')
    .argument('<serial>', 'serial number (hex)')
    .addOption(
      new Option('--reason <reason>', 'RFC 5280 revocation reason').choices([
        'unspecified',
        'keyCompromise',
        'cACompromise',
        'affiliationChanged',
        'superseded',
        'cessationOfOperation',
        'privilegeWithdrawn',
      ]),
    )
    .option('--deny-only', 'only add the serial to revoked.txt, for a host without ca.key (no new CRL)')
    .option('--days <n>', 'validity of the new CRL in days (default 90)', parseDays)
    .option('--json', 'JSON output')
    .action(
      async (
        serial: string,
        opts: { dir: string; reason?: string; denyOnly?: boolean; days?: number; json?: boolean },
      ) => {
        const m = await loadPart<PkiModule>('pki');
        const r = await m.revoke({
          dir: opts.dir,
          serial,
          crl: opts.denyOnly !== true,
          ...(opts.reason ? { reason: opts.reason } : {}),
          ...(opts.days ? { days: opts.days } : {}),
        });
        await printPkiResult(io, r, opts.json === true);
        setCode(ExitCode.ok);
      },
    );
  pki
    .command('crl')
    .description('show the CRL and whether TLS can use it, or sign a new one with --refresh')
    .requiredOption('--dir <dir>', 'PKI directory')
    .option('--refresh', 'sign a new CRL from the deny list and the current CRL (needs ca.key)')
    .option('--days <n>', 'validity of the new CRL in days (default 90)', parseDays)
    .option('--json', 'JSON output')
    .action(async (opts: { dir: string; refresh?: boolean; days?: number; json?: boolean }) => {
      const m = await loadPart<PkiModule>('pki');
      const info = opts.refresh
        ? await m.refreshCrl({ dir: opts.dir, ...(opts.days ? { days: opts.days } : {}) })
        : await m.crlStatus({ dir: opts.dir });
      const { entries, ...summary } = info;
      await printPkiResult(io, opts.json ? info : summary, opts.json === true);
      if (!opts.json) {
        const lines = entries.map(
          (e) => `entry: ${e.serial} ${e.revokedAt.toISOString()}${e.reason ? ` ${e.reason}` : ''}\n`,
        );
        await writeOut(io.stdout, lines.join(''));
      }
      // A CRL TLS cannot use is a failure a cron job or a monitor should see.
      if (info.state === 'expired' || info.state === 'not-yet-valid' || info.state === 'invalid') {
        const why =
          info.state === 'invalid'
            ? `cannot be used: ${info.error}`
            : info.state === 'expired'
              ? `expired on ${info.nextUpdate?.toISOString()}, so TLS no longer checks it`
              : `is not valid before ${info.thisUpdate?.toISOString()}, so TLS does not check it yet`;
        throw new CliError(ErrorCode.CONFIG_INVALID, `The CRL "${info.crlPath}" ${why}`, ExitCode.failure, {
          hint: `Sign a new one with \`jth pki crl --refresh --dir ${opts.dir}\` where ca.key is`,
        });
      }
      setCode(ExitCode.ok);
    });

  program
    .command('doctor')
    .description('check what this host can enforce')
    .option('--json', 'JSON output')
    .action(async (opts: { json?: boolean }) => {
      setCode(await doctor(io, opts.json === true));
    });

  return program;
}

/** The lines that point the CLI at the dev certificates a first start made. */
function devPkiLines(
  url: string,
  pki: { created: string[]; ca: string; clientCert: string; clientKey: string },
) {
  return [
    `jth: created dev certificates (${pki.created.join(', ')}) in ${pki.ca.replace(/\/ca\.crt$/, '')}`,
    'jth: point the CLI at this server (admin user "dev") with:',
    `  export JTH_SERVER=${url}`,
    `  export JTH_CA=${pki.ca}`,
    `  export JTH_CERT=${pki.clientCert}`,
    `  export JTH_KEY=${pki.clientKey}`,
    '',
  ].join('\n');
}

type ConfigCheck = import('../server/mod.ts').ConfigCheck;

/** A URL with port 0 said as what it means. */
const anyPort = (url: string) => (url.endsWith(':0') ? `${url}  (any free port)` : url);

/** `jth server --check-config`: 0 and a summary when the config would start, 2 and the error otherwise. */
async function checkConfig(io: Io, check: () => Promise<ConfigCheck>, json: boolean): Promise<number> {
  let r: ConfigCheck;
  try {
    r = await check();
  } catch (err) {
    const e = err instanceof JthError ? err : null;
    reportError(io, err);
    if (json)
      await writeOut(io.stdout, `${JSON.stringify({ ok: false, error: e?.toJSON() ?? String(err) })}\n`);
    return ExitCode.usage;
  }
  if (json) {
    await writeOut(io.stdout, `${JSON.stringify({ ok: true, ...r }, null, 2)}\n`);
    return ExitCode.ok;
  }
  const l = r.limits;
  const limits = (x: typeof l.max) =>
    `cpu ${x.cpu}, memory ${formatBytes(x.memoryBytes)}, pids ${x.pids}, disk ${formatBytes(x.diskBytes)}, timeout ${formatDuration(x.timeoutMs)}`;
  const lines = [
    `config ${r.config}: OK`,
    `  api          ${anyPort(r.url)}`,
    `  ops          ${r.ops === false ? 'off' : `${anyPort(r.ops)}  (/healthz, /readyz, /metrics)`}`,
    `  state dir    ${r.stateDir}`,
    `  pki dir      ${r.pkiDir}  (${r.pki})`,
    `  log level    ${r.logLevel}${r.logLevelFrom === 'JTH_LOG_LEVEL' ? '  (from JTH_LOG_LEVEL)' : ''}`,
    `  plugins      ${r.plugins.join(', ')}`,
    `  jobs         ${r.maxRunning} at once on this node; ${l.concurrency} per user, ${l.total} in all queued or running`,
    `  defaults     ${limits(l.defaults)}`,
    `  max          ${limits(l.max)}`,
    ...Object.entries(l.users).map(
      ([u, o]) => `  user ${u.padEnd(7)} ${limits(o.max)}; ${o.concurrency} at once`,
    ),
    ...r.notes.map((n) => `  note         ${n}`),
  ];
  await writeOut(io.stdout, `${lines.join('\n')}\n`);
  return ExitCode.ok;
}

/** `jth version`: this CLI's version, then the server's (from `/v1/version`). */
async function version(
  io: Io,
  opts: { client?: boolean; json?: boolean; flags: ConnectionFlags },
): Promise<number> {
  if (opts.client) {
    await writeOut(io.stdout, opts.json ? `${JSON.stringify({ client: VERSION })}\n` : `client ${VERSION}\n`);
    return ExitCode.ok;
  }
  const [{ ApiClient }, { resolveConnection }] = await Promise.all([
    import('./client.ts'),
    import('./connection.ts'),
  ]);
  let server: { version: string; api: string } | undefined;
  let failure: unknown;
  try {
    const client = new ApiClient(resolveConnection(opts.flags, { env: io.env, cwd: io.cwd }));
    try {
      server = await client.json<{ version: string; api: string }>('GET', '/v1/version');
    } finally {
      client.close();
    }
  } catch (err) {
    failure = err;
  }
  if (opts.json) {
    const out = {
      client: VERSION,
      ...(server ? { server: server.version, api: server.api } : {}),
      ...(failure ? { serverError: failure instanceof Error ? failure.message : String(failure) } : {}),
    };
    await writeOut(io.stdout, `${JSON.stringify(out)}\n`);
  } else {
    await writeOut(
      io.stdout,
      `client ${VERSION}\n${server ? `server ${server.version} (api ${server.api})\n` : ''}`,
    );
  }
  // The client's version is printed either way; an unreachable server still fails the command.
  return failure ? reportError(io, failure) : ExitCode.ok;
}

/**
 * Run `server/doctor.ts` and print its report (with its own `formatDoctor` when it has one). Exit 0:
 * the report describes the host, and a missing capability is a fact to read, not a failure of doctor.
 */
async function doctor(io: Io, json: boolean): Promise<number> {
  type DoctorModule = typeof import('../server/doctor.ts');
  const m = await loadPart<DoctorModule>('doctor');
  const report = m.doctor();
  const text = json ? JSON.stringify(report, null, 2) : m.formatDoctor(report, useColor(io.stdout, io.env));
  await writeOut(io.stdout, `${text}\n`);
  return ExitCode.ok;
}

/** Run the CLI with `argv` (without node and the script); resolves with the exit code. */
export async function main(argv: string[], io: Io = defaultIo()): Promise<number> {
  let code: number = ExitCode.ok;
  const program = buildProgram(io, (c) => {
    code = c;
  });
  if (argv.length === 0) {
    program.outputHelp();
    return ExitCode.usage;
  }
  try {
    await program.parseAsync(argv, { from: 'user' });
    return code;
  } catch (err) {
    if (err instanceof CommanderError) {
      // Help and version "errors" are successes; everything else commander reports is a usage error.
      return err.exitCode === 0 ? ExitCode.ok : ExitCode.usage;
    }
    return reportError(io, err);
  }
}
