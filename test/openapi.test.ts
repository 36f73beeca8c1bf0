/**
 * @module
 * The API's OpenAPI 3.1 document, checked against the real server (real TLS 1.3 handshakes, a real
 * client certificate):
 * - it is a valid OpenAPI 3.1 document (@seriousme/openapi-schema-validator, tested on 2,000 public APIs);
 * - every route of the hono app is in it, with its parameters, request body and response schemas;
 * - a fuzzer driven by nothing but the document sends requests to every operation. json-schema-faker
 *   (a JSON Schema 2020-12 data generator none of us wrote) generates every path and query parameter
 *   and every body from the document's own schemas; a share of them are then broken (a wrong type, a
 *   missing or unknown property, a non-JSON body). Every answer must be one the document declares for
 *   that operation (status, content type, and a body valid against the declared schema under Ajv's JSON
 *   Schema 2020-12, the dialect of OpenAPI 3.1), and none may be a 5xx. A request built only from
 *   schema-valid values must not be refused as schema-invalid ("Invalid request: …"): that would mean
 *   the document and the validator disagree.
 *
 * No npm fuzzer speaks OpenAPI 3.1 (openapi-fuzzer-core reads Swagger 2.0 only; dredd is archived and
 * reads 3.0 at most), hence a data generator driven by the document here. `JTH_FUZZ_SEED` replays a run;
 * `JTH_FUZZ_RUNS` sets the requests per operation (default 24, half of them broken).
 */
import { Agent, request } from 'node:https';
import { Validator } from '@seriousme/openapi-schema-validator';
import { Ajv2020, type ValidateFunction } from 'ajv/dist/2020.js';
import { createGeneratorSync } from 'json-schema-faker';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../core/log.ts';
import { createApp } from '../server/app.ts';
import { routeTemplate } from '../server/metrics.ts';
import {
  bundleSource,
  call,
  type Identity,
  startTestServer,
  submit,
  type TestServer,
  watch,
} from './helpers/server.ts';

// biome-ignore lint/suspicious/noExplicitAny: an OpenAPI document is walked as plain JSON
type Json = any;

const SEED = Number(process.env.JTH_FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 31));
const RUNS = Number(process.env.JTH_FUZZ_RUNS ?? 24);
const METHODS = ['get', 'put', 'post', 'delete', 'patch', 'head', 'options'];

let t: TestServer;
let who: Identity;
let doc: Json;
/** Ids of real jobs, so that generated requests also reach the 200 answers of `/jobs/{id}/...`. */
const known = { ids: [] as string[], artifacts: [] as string[] };

beforeAll(async () => {
  t = await startTestServer();
  who = await t.identity('fuzz');
  const res = await call(t.server.url, who, { path: '/v1/openapi.json' });
  expect(res.status).toBe(200);
  doc = res.json();
  // One finished job with an artifact, and one that failed.
  const ok = await submit(t.server.url, who, {
    bundle: await bundleSource(
      "import { writeFileSync } from 'node:fs'; writeFileSync(process.env.JTH_ARTIFACTS + '/out.txt', 'hi'); console.log('done');",
    ),
  });
  const failed = await submit(t.server.url, who, { bundle: await bundleSource('process.exit(3)') });
  await watch(t.server.url, who, ok);
  await watch(t.server.url, who, failed);
  known.ids.push(ok, failed, ok.slice(0, 8));
  known.artifacts.push('out.txt');
}, 60_000);
afterAll(() => t?.close());

describe('the OpenAPI document', () => {
  it('is a valid OpenAPI 3.1 document', async () => {
    const validator = new Validator();
    const res = await validator.validate(structuredClone(doc));
    expect(res.errors ?? []).toEqual([]);
    expect(res.valid).toBe(true);
    expect(validator.version).toBe('3.1');
    // The validator does catch a broken document (so the check above means something).
    const broken = structuredClone(doc);
    broken.paths['/v1/jobs'].post.responses['201'].content = 'not a map';
    expect((await new Validator().validate(broken)).valid).toBe(false);
  });

  it('has every route of the app, with its parameters, request body and response schemas', () => {
    // The app the server runs, built again (its dependencies are not used until a request comes).
    const app = createApp({
      driver: {} as never,
      jobs: {} as never,
      log: silentLogger,
      redactor: {} as never,
      bodyLimitBytes: 1,
      maxWatchersPerUser: 1,
      version: doc.info.version,
    });
    const routes = new Set(
      app.routes
        // The console's pages (/ui) are HTML for browsers, not the API; the API they call is /v1.
        .filter((r) => r.method !== 'ALL' && !r.path.startsWith('/ui'))
        .map((r) => `${r.method} ${routeTemplate(r.path)}`),
    );
    const documented = new Set(
      Object.entries(doc.paths).flatMap(([p, item]) =>
        Object.keys(item as object)
          .filter((m) => METHODS.includes(m))
          .map((m) => `${m.toUpperCase()} ${p}`),
      ),
    );
    expect([...routes].sort()).toEqual([...documented].sort());
    expect(routes.size).toBeGreaterThanOrEqual(10);

    for (const { method, path, op } of operations(doc)) {
      const where = `${method.toUpperCase()} ${path}`;
      // Every path parameter of the template is declared, with a schema.
      const declared = (op.parameters ?? []).map((p: Json) => resolveRef(doc, p));
      for (const name of [...path.matchAll(/\{([^}]+)\}/g)].map((m) => m[1])) {
        const p = declared.find((d: Json) => d.in === 'path' && d.name === name);
        expect(p, `${where}: path parameter ${name}`).toBeDefined();
        expect(p.required, `${where}: path parameter ${name} is required`).toBe(true);
        expect(p.schema, `${where}: schema of ${name}`).toBeTypeOf('object');
      }
      for (const p of declared) expect(p.schema, `${where}: schema of ${p.name}`).toBeTypeOf('object');
      if (method === 'post' && path === '/v1/jobs') {
        expect(op.requestBody?.content?.['application/json']?.schema, `${where}: body schema`).toBeDefined();
      }
      // Every answer has a description; every success and every error has a typed body.
      const statuses = Object.keys(op.responses ?? {});
      expect(
        statuses.some((s) => s.startsWith('2')),
        `${where}: a 2xx answer`,
      ).toBe(true);
      for (const s of statuses) {
        const r = resolveRef(doc, op.responses[s]);
        expect(r.description, `${where} ${s}: description`).toBeTruthy();
        const media = Object.entries(r.content ?? {});
        expect(media.length, `${where} ${s}: content`).toBeGreaterThan(0);
        for (const [type, m] of media) {
          expect((m as Json).schema, `${where} ${s} ${type}: schema`).toBeTypeOf('object');
        }
      }
    }
  });
});

describe('fuzzing every operation from the document', () => {
  it(`gets only declared answers, never a 5xx (seed ${SEED}, ${RUNS} requests per operation)`, async () => {
    const gen = createGeneratorSync({ seed: SEED });
    const rand = mulberry32(SEED);
    const fake = (schema: Json) => gen.generate({ ...schema, components: doc.components });
    const ajv = new Ajv2020({ strict: false, allErrors: false });
    ajv.addFormat('binary', true);
    const validators = new Map<string, ValidateFunction>();
    const agent = new Agent({ keepAlive: true, maxSockets: 4 });
    const problems: string[] = [];
    const seen = new Map<string, Set<string>>();

    try {
      for (const { method, path, op } of operations(doc)) {
        const where = `${method.toUpperCase()} ${path}`;
        const statuses = new Set<string>();
        seen.set(where, statuses);
        const params = (op.parameters ?? []).map((p: Json) => resolveRef(doc, p));
        const bodySchema = op.requestBody?.content?.['application/json']?.schema;
        const requests = Array.from({ length: RUNS }, (_, i) =>
          buildRequest({ method, path, params, bodySchema, broken: i % 2 === 1, fake, rand }),
        );
        // A few at a time: enough to overlap, few enough to stay under the per-address bounds.
        for (let i = 0; i < requests.length; i += 4) {
          const batch = requests.slice(i, i + 4);
          const answers = await Promise.all(batch.map((r) => send(t.server.url, who, agent, r)));
          for (const [j, res] of answers.entries()) {
            const req = batch[j]!;
            statuses.add(String(res.status));
            for (const p of judge({ op, where, req, res, ajv, validators })) {
              problems.push(
                `${p}\n    request: ${describeRequest(req)}\n    answer: ${res.status} ${res.type} ${res.body.slice(0, 300)}`,
              );
            }
          }
        }
      }
    } finally {
      agent.destroy();
    }
    // What the fuzzer reached, for the record of the run.
    console.info(
      `fuzz seed ${SEED}: ${[...seen].map(([op, st]) => `${op} → ${[...st].sort().join(' ')}`).join('; ')}`,
    );
    expect(problems, `seed ${SEED}`).toEqual([]);
    // The fuzzer reached more than the error paths: each operation answered at least one 2xx or a
    // documented refusal, and the known jobs were found.
    expect([...(seen.get('GET /v1/jobs/{id}') ?? [])]).toContain('200');
    expect([...(seen.get('GET /v1/jobs/{id}') ?? [])]).toContain('404');
    expect([...(seen.get('POST /v1/jobs') ?? [])]).toContain('400');
    expect([...(seen.get('GET /v1/jobs') ?? [])]).toContain('200');
  }, 120_000);
});

interface FuzzRequest {
  method: string;
  path: string;
  query: Array<[string, string]>;
  body?: string;
  contentType?: string;
  /** Every part was generated valid by the document's schemas. */
  valid: boolean;
  note: string;
}

interface Answer {
  status: number;
  type: string;
  body: string;
}

function operations(d: Json): Array<{ method: string; path: string; op: Json }> {
  return Object.entries(d.paths).flatMap(([path, item]) =>
    Object.entries(item as Json)
      .filter(([m]) => METHODS.includes(m))
      .map(([method, op]) => ({ method, path, op })),
  );
}

function resolveRef(d: Json, value: Json): Json {
  if (!value || typeof value.$ref !== 'string') return value;
  const parts = value.$ref.replace(/^#\//, '').split('/');
  return parts.reduce((o: Json, k: string) => o?.[k.replace(/~1/g, '/').replace(/~0/g, '~')], d);
}

/** A small seeded PRNG, so a failing run replays with JTH_FUZZ_SEED. */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = Math.imul(a ^ (a >>> 15), 1 | a);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

const pick = <T>(rand: () => number, xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
/** Values of every JSON type, for breaking a field or a body. */
const WRONG: unknown[] = [null, true, 0, -1, 1.5, 1e300, '', 'x', [], [1], {}, { a: 1 }, '\u0000', '😀'];

function buildRequest(o: {
  method: string;
  path: string;
  params: Json[];
  bodySchema: Json;
  broken: boolean;
  fake: (schema: Json) => unknown;
  rand: () => number;
}): FuzzRequest {
  const { rand, fake } = o;
  const notes: string[] = [];
  let valid = true;
  // What to break, when this request is one of the broken ones.
  const targets = [
    ...o.params.filter((p) => p.in !== 'header').map((p) => `param:${p.name}`),
    ...(o.bodySchema ? ['body:type', 'body:field', 'body:missing', 'body:unknown', 'body:json'] : []),
  ];
  const breakWhat = o.broken && targets.length ? pick(rand, targets) : null;
  if (breakWhat) {
    valid = false;
    notes.push(`broken ${breakWhat}`);
  }

  let path = o.path;
  const query: Array<[string, string]> = [];
  for (const p of o.params) {
    const broken = breakWhat === `param:${p.name}`;
    if (p.in === 'query' && !p.required && !broken && rand() < 0.4) continue;
    let value: unknown = fake(p.schema);
    // Known ids and names half the time, so answers other than 404 come back too.
    if (!broken && p.name === 'id' && rand() < 0.5) value = pick(rand, known.ids);
    if (!broken && p.name === 'name' && rand() < 0.5) value = pick(rand, known.artifacts);
    if (broken) value = pick(rand, WRONG);
    if (p.in === 'path') {
      const text = typeof value === 'string' ? value : JSON.stringify(value);
      // An empty segment would be another route: a path parameter has at least one character.
      path = path.replace(`{${p.name}}`, encodeURIComponent(text || '%'));
    } else if (p.in === 'query') {
      for (const v of Array.isArray(value) ? value : [value]) {
        query.push([p.name, typeof v === 'string' ? v : JSON.stringify(v)]);
      }
    }
  }

  const req: FuzzRequest = { method: o.method.toUpperCase(), path, query, valid, note: notes.join(', ') };
  if (o.bodySchema) {
    let body = fake(o.bodySchema) as Json;
    const isObj = body && typeof body === 'object' && !Array.isArray(body);
    const keys = isObj ? Object.keys(body) : [];
    switch (breakWhat) {
      case 'body:type':
        body = pick(
          rand,
          WRONG.filter((w) => !(w && typeof w === 'object' && !Array.isArray(w))),
        );
        break;
      case 'body:field':
        if (keys.length) body[pick(rand, keys)] = pick(rand, WRONG);
        else body = pick(rand, WRONG);
        break;
      case 'body:missing':
        body = {};
        break;
      case 'body:unknown':
        if (isObj) body[`unknown_${Math.floor(rand() * 1e6)}`] = pick(rand, WRONG);
        else body = { unknown: 1 };
        break;
    }
    req.body =
      breakWhat === 'body:json' ? pick(rand, ['{', '', 'null x', '{"a":}', '\u0000']) : JSON.stringify(body);
    req.contentType = breakWhat === 'body:json' && rand() < 0.3 ? 'text/plain' : 'application/json';
  }
  return req;
}

function describeRequest(r: FuzzRequest): string {
  const q = r.query.length ? `?${new URLSearchParams(r.query)}` : '';
  const body = r.body === undefined ? '' : ` body=${r.body.slice(0, 300)}`;
  return `${r.method} ${r.path}${q}${body}${r.note ? ` (${r.note})` : ''}`;
}

function send(url: string, id: Identity, agent: Agent, r: FuzzRequest): Promise<Answer> {
  const u = new URL(r.path, url);
  for (const [k, v] of r.query) u.searchParams.append(k, v);
  return new Promise((resolve, reject) => {
    const req = request(
      u,
      {
        method: r.method,
        agent,
        cert: id.cert,
        key: id.key,
        ca: id.ca,
        minVersion: 'TLSv1.3',
        headers: r.body === undefined ? {} : { 'content-type': r.contentType ?? 'application/json' },
        // A streamed output of a job that is still running would go on: no answer takes this long.
        timeout: 15_000,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            type: String(res.headers['content-type'] ?? ''),
            body: Buffer.concat(chunks).toString('utf8'),
          }),
        );
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error(`no answer within 15 s: ${describeRequest(r)}`)));
    req.on('error', reject);
    req.end(r.body);
  });
}

/** What is wrong with an answer, by the document: nothing, or one line per problem. */
function judge(o: {
  op: Json;
  where: string;
  req: FuzzRequest;
  res: Answer;
  ajv: Ajv2020;
  validators: Map<string, ValidateFunction>;
}): string[] {
  const { op, where, req, res } = o;
  const out: string[] = [];
  if (res.status >= 500) out.push(`${where}: a ${res.status}`);
  const s = String(res.status);
  const declared = op.responses[s] ?? op.responses[`${s[0]}XX`] ?? op.responses.default;
  if (!declared) {
    out.push(`${where}: status ${s} is not declared (declared: ${Object.keys(op.responses).join(', ')})`);
    return out;
  }
  const response = resolveRef(doc, declared);
  const media = res.type.split(';')[0]!.trim().toLowerCase();
  const content = response.content?.[media];
  if (!content) {
    out.push(
      `${where} ${s}: content type "${media}" is not declared (${Object.keys(response.content ?? {}).join(', ')})`,
    );
    return out;
  }
  if (media === 'application/json') {
    let body: unknown;
    try {
      body = JSON.parse(res.body);
    } catch {
      out.push(`${where} ${s}: the body is not JSON`);
      return out;
    }
    const key = `${where} ${s} ${media}`;
    let validate = o.validators.get(key);
    if (!validate) {
      validate = o.ajv.compile({ ...content.schema, components: doc.components });
      o.validators.set(key, validate);
    }
    if (!validate(body)) {
      out.push(`${where} ${s}: the body does not match its schema: ${o.ajv.errorsText(validate.errors)}`);
    }
    const message = (body as Json)?.error?.message;
    if (req.valid && s === '400' && typeof message === 'string' && message.startsWith('Invalid request')) {
      out.push(`${where}: a request valid by the document was refused by the validator: ${message}`);
    }
  }
  return out;
}
