// Module hooks (node:module register) that write the URL of every module loaded through the ESM loader to a file,
// one per line: test/registry.test.ts reads what a process really loaded, SDKs included.
import { appendFileSync } from 'node:fs';

let file;

export function initialize(data) {
  file = data.file;
}

export async function load(url, context, next) {
  appendFileSync(file, `${url}\n`);
  return next(url, context);
}
