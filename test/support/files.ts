/**
 * Every file under a folder with its content, for tests that prove a secret is on no disk. Runtimes keep writing
 * while a test reads (lock files come and go), so an entry that vanishes between listing and reading is skipped:
 * what is gone cannot hold a secret.
 */
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';

export async function readFilesUnder(dir: string, maxBytes = 50_000_000): Promise<Array<{ path: string; content: Buffer }>> {
  const out: Array<{ path: string; content: Buffer }> = [];
  const entries = await readdir(dir, { withFileTypes: true }).catch(vanished);
  for (const entry of entries ?? []) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await readFilesUnder(path, maxBytes)));
    else if (entry.isFile()) {
      const content = await readFile(path).catch(vanished);
      if (content && content.length < maxBytes) out.push({ path, content });
    }
  }
  return out;
}

function vanished(err: NodeJS.ErrnoException): undefined {
  if (err.code === 'ENOENT' || err.code === 'ENOTDIR') return undefined;
  throw err;
}
