/**
 * Policy matching, pure (governance/policy.ts): the glob matcher is linear and keeps the platform's glob semantics.
 */
import { describe, expect, it } from 'vitest';
import { compileGlob, globMatch } from '../governance/policy';

/** The matcher this file replaced, as the reference for what the glob means (safe on the tiny inputs used here). */
function regexGlob(glob: string, value: string): boolean {
  let source = '^';
  for (const ch of glob) source += ch === '*' ? '.*' : ch === '?' ? '.' : ch.replace(/[.+^${}()|[\]\\]/g, '\\$&');
  return new RegExp(source + '$', 's').test(value);
}

describe('glob semantics', () => {
  it('keeps the platform glob: * spans slashes, spaces and newlines, ? is one character, the rest is literal, the whole value must match', () => {
    expect(globMatch('*.ts', 'src/a/b.ts')).toBe(true);
    expect(globMatch('git *', 'git log\n--oneline')).toBe(true);
    expect(globMatch('a?c', 'abc')).toBe(true);
    expect(globMatch('a?c', 'ac')).toBe(false);
    expect(globMatch('a?c', 'abbc')).toBe(false);
    expect(globMatch('git *', 'xgit status')).toBe(false);
    expect(globMatch('git', 'git status')).toBe(false);
    expect(globMatch('', '')).toBe(true);
    expect(globMatch('*', '')).toBe(true);
    expect(globMatch('a*a', 'a')).toBe(false);
    expect(globMatch('mcp:github:*', 'mcp:github:create_issue')).toBe(true);
    // regular-expression metacharacters are plain characters
    expect(globMatch('(a)+.[b]{2}|^$\\', '(a)+.[b]{2}|^$\\')).toBe(true);
    expect(globMatch('(a)+', 'aa')).toBe(false);
    expect(globMatch('a.c', 'abc')).toBe(false);
  });

  it('agrees with the old regex matcher on every small glob and value over a, b, ? and *', () => {
    let seed = 7;
    const random = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), seed % n);
    const pick = (alphabet: string, length: number) => Array.from({ length }, () => alphabet[random(alphabet.length)]).join('');
    for (let i = 0; i < 5000; i += 1) {
      const glob = pick('ab?*', random(8));
      const value = pick('ab', random(10));
      expect(globMatch(glob, value), `${glob} on ${value}`).toBe(regexGlob(glob, value));
    }
    // segments longer than 32 characters with ? take the multi-word path of the bit-parallel scan
    for (let i = 0; i < 300; i += 1) {
      const glob = `*${pick('ab?', 33 + random(40))}*${pick('ab', random(3))}`;
      const value = pick('ab', 60 + random(120));
      expect(globMatch(glob, value), `${glob} on ${value}`).toBe(regexGlob(glob, value));
    }
    const long = `x${'a?'.repeat(20)}b`;
    expect(globMatch(`*${long}*`, `yy${long.replaceAll('?', 'z')}yy`)).toBe(true);
  });

  it('matches the issue\'s ReDoS pattern against a 1 MB value with a bounded number of steps (linear, no backtracking)', () => {
    // every access the matcher makes to the value is a method call on this object, so they can be counted
    let steps = 0;
    class Counted extends String {
      override charCodeAt(index: number) {
        steps += 1;
        return super.charCodeAt(index);
      }
      override indexOf(search: string, from?: number) {
        steps += 1;
        return super.indexOf(search, from);
      }
      override startsWith(search: string, from?: number) {
        steps += 1;
        return super.startsWith(search, from);
      }
    }
    const n = 1_000_000;
    for (const glob of ['*a*a*a*a*a*a*a*a*a*ab', `*${'a*'.repeat(15)}b`, `*${'a?'.repeat(8)}*${'a'.repeat(40)}?b*`]) {
      steps = 0;
      expect(compileGlob(glob)(new Counted('a'.repeat(n)) as unknown as string)).toBe(false);
      // at most one indexOf or startsWith per segment, and one read per character of the value per `?` segment
      expect(steps).toBeLessThanOrEqual(glob.split('*').length * (n + 2));
    }
  });
});
