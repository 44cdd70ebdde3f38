import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { README, render } from '../scripts/generate-docs';

describe('README', () => {
  it('holds the capability and permission tables exactly as the code declares them (run npm run docs)', async () => {
    const readme = await readFile(README, 'utf8');
    expect(readme).toBe(render(readme));
  });

  it('names only files that exist (it once cited test/conformance.test.ts, which had become test/conformance/*.test.ts)', async () => {
    const readme = await readFile(README, 'utf8');
    const root = dirname(README);
    // `path/file.ext` in backticks, for the project's own folders; placeholders such as <runtime> stand for any name
    const cited = [...readme.matchAll(/`((?:api|activities|bench|cli|config|dashboard|db|docs|examples|governance|observability|runtimes|scripts|test|worker|workflows)\/[^`\s]+)`/g)].map((m) => m[1]!);
    expect(cited.length).toBeGreaterThan(10);
    const missing = cited.filter((path) => !path.includes('<') && !path.includes('*') && !existsSync(join(root, path.replace(/[/:]$/, ''))));
    expect(missing).toEqual([]);
  });
});
