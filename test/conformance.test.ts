/**
 * @module
 * The built-in plugins pass the conformance suites that third-party authors run (conformance/).
 */
import { existsSync, mkdtempSync, readFileSync, rmdirSync } from 'node:fs';
import { afterAll } from 'vitest';
import { tmpdir } from 'node:os';
import type { Plugin, PluginDefinition } from '../core/types.ts';
import artifactsFs from '../plugins/artifacts-fs/mod.ts';
import authMtls from '../plugins/auth-mtls/mod.ts';
import { initCa, issueClient, issueServer, revoke } from '../plugins/auth-mtls/pki.ts';
import cgroup from '../plugins/isolation-cgroup/mod.ts';
import chroot from '../plugins/isolation-chroot/mod.ts';
import runtimeDeno from '../plugins/runtime-deno/mod.ts';
import runtimeNode from '../plugins/runtime-node/mod.ts';
import { denoBinary, probeHost } from '../server/host.ts';
import {
  testAuthPlugin,
  testCollectPlugin,
  testExecutePlugin,
  testIsolationPlugin,
} from '../conformance/mod.ts';
import { silentLogger } from '../core/log.ts';
import { createPlugin } from '../core/plugins.ts';

const stateDir = mkdtempSync(`${tmpdir()}/jth-conformance-`);
const host = probeHost();

function create<O>(def: PluginDefinition<O>, options: object) {
  return createPlugin(def, options, { log: silentLogger, configDir: process.cwd(), stateDir });
}

const sandboxSkip =
  host.root && host.bwrap && host.setpriv && host.userns
    ? false
    : 'bwrap, setpriv and user namespaces are needed';
testIsolationPlugin({ name: 'isolation-chroot', skip: sandboxSkip, create: () => create(chroot, {}) });

const cgroupRoot = host.cgroup2 ? `${host.cgroup2.mount}/jth-conformance-${process.pid}` : null;
const cgroupPlugins: Plugin[] = [];
afterAll(async () => {
  // close() removes the plugin's (empty) tree; then the test root itself goes.
  for (const p of cgroupPlugins) await p.close?.();
  if (cgroupRoot && existsSync(cgroupRoot)) rmdirSync(cgroupRoot);
});
testIsolationPlugin({
  name: 'isolation-cgroup',
  skip: host.root && cgroupRoot ? false : 'needs root and a cgroup2 mount',
  create: async () => {
    const p = await create(cgroup, { root: cgroupRoot, enforceLimits: host.cgroupLimits });
    await p.start?.({ log: silentLogger, stateDir, runningJobs: new Set() });
    cgroupPlugins.push(p);
    return p;
  },
});

testExecutePlugin({ name: 'runtime-node', runtime: 'node', create: () => create(runtimeNode, {}) });
testExecutePlugin({
  name: 'runtime-deno',
  runtime: 'deno',
  skip:
    denoBinary() || existsSync('node_modules/.bin/deno') ? false : 'the deno npm package is not installed',
  create: () => create(runtimeDeno, {}),
});
testCollectPlugin({
  name: 'artifacts-fs',
  create: () => create(artifactsFs, { dir: `${stateDir}/artifacts` }),
});

/** DER of a PEM certificate, as Node's TLS layer hands it to the server. */
function der(file: string): Uint8Array {
  const b64 = readFileSync(file, 'utf8')
    .replace(/-----[^-]+-----/g, '')
    .replace(/\s+/g, '');
  return new Uint8Array(Buffer.from(b64, 'base64'));
}

const pkiDir = `${stateDir}/pki`;
const pki = (async () => {
  await initCa({ dir: pkiDir });
  const server = await issueServer({ dir: pkiDir, hosts: ['localhost'], ips: ['127.0.0.1'] });
  const good = await issueClient({ dir: pkiDir, user: 'alice' });
  const revoked = await issueClient({ dir: pkiDir, user: 'mallory' });
  await revoke({ dir: pkiDir, serial: revoked.serial });
  return { server, good, revoked };
})();
testAuthPlugin({
  name: 'auth-mtls',
  create: () => create(authMtls, { dir: pkiDir }),
  valid: async () => ({ headers: {}, tlsAuthorized: true, peerCertificate: der((await pki).good.certPath) }),
  invalid: async () => {
    const { good, revoked, server } = await pki;
    return [
      { headers: {}, tlsAuthorized: false, peerCertificate: der(good.certPath) },
      { headers: {}, tlsAuthorized: true, peerCertificate: der(revoked.certPath) },
      { headers: {}, tlsAuthorized: true, peerCertificate: der(server.certPath) },
      { headers: {}, tlsAuthorized: true, peerCertificate: new Uint8Array([0x30, 0x03, 0x02, 0x01, 0x00]) },
    ];
  },
});
