/**
 * @module
 * How a job's input is stored by every backend: the spec as JSON (its stdin as base64), and the app
 * files packed into one binary blob — `[u16 name length][name][u32 size][bytes]` per file — so a 32 MiB
 * bundle costs 32 MiB, not the 43 MiB of base64.
 */
import type { JobInput, StoredSpec } from './types.ts';

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export function encodeSpec(spec: StoredSpec): string {
  const { data, ...rest } = spec;
  return JSON.stringify(data ? { ...rest, dataBase64: Buffer.from(data).toString('base64') } : rest);
}

export function decodeSpec(text: string): StoredSpec {
  const { dataBase64, ...rest } = JSON.parse(text) as StoredSpec & { dataBase64?: string };
  return dataBase64 === undefined
    ? rest
    : { ...rest, data: new Uint8Array(Buffer.from(dataBase64, 'base64')) };
}

export function encodeFiles(files: JobInput['files']): Uint8Array {
  const parts: Uint8Array[] = [];
  let size = 0;
  for (const [name, bytes] of Object.entries(files)) {
    const n = encoder.encode(name);
    if (n.byteLength > 0xffff) throw new Error(`File name "${name.slice(0, 40)}..." is too long to store`);
    const head = new Uint8Array(6 + n.byteLength);
    const view = new DataView(head.buffer);
    view.setUint16(0, n.byteLength);
    head.set(n, 2);
    view.setUint32(2 + n.byteLength, bytes.byteLength);
    parts.push(head, bytes);
    size += head.byteLength + bytes.byteLength;
  }
  const out = new Uint8Array(size);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.byteLength;
  }
  return out;
}

export function decodeFiles(blob: Uint8Array): JobInput['files'] {
  const files: JobInput['files'] = {};
  const view = new DataView(blob.buffer, blob.byteOffset, blob.byteLength);
  let at = 0;
  while (at < blob.byteLength) {
    const nameLen = view.getUint16(at);
    const name = decoder.decode(blob.subarray(at + 2, at + 2 + nameLen));
    const size = view.getUint32(at + 2 + nameLen);
    const start = at + 6 + nameLen;
    files[name] = blob.subarray(start, start + size);
    at = start + size;
  }
  return files;
}
