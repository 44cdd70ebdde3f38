import { readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { README, render } from '../scripts/generate-docs';

describe('README', () => {
  it('holds the capability and permission tables exactly as the code declares them (run npm run docs)', async () => {
    const readme = await readFile(README, 'utf8');
    expect(readme).toBe(render(readme));
  });
});
