/**
 * Policy evaluation alone (pure, no I/O): what reading a bash line with a shell parser costs a tool decision, and
 * what the worst glob costs now that the matcher cannot backtrack.
 *
 *   npx tsx bench/policy.ts [--iterations 20000]
 *
 * Baseline in the same process: the matcher this replaced (each glob turned into a RegExp, `*` → `.*`, matched
 * against the raw line), on the same policies and lines. The worst case is the pattern on a subject that
 * the old matcher needs exponential time for; it is run against the old matcher only at a length it survives.
 */
import { performance } from 'node:perf_hooks';
import { evaluatePolicy } from '../governance/policy';
import type { ToolPolicy } from '../governance/types';
import { flags, ms, printMachine, printTable } from './support';

const opts = flags({ iterations: 20_000 });
printMachine(`policy evaluation (${opts.iterations} evaluations per row)`);

/** The matcher before this change, kept here only as the baseline. */
function oldGlobMatch(glob: string, value: string): boolean {
  let source = '^';
  for (const ch of glob) {
    if (ch === '*') source += '.*';
    else if (ch === '?') source += '.';
    else source += ch.replace(/[.+^${}()|[\]\\]/g, '\\$&');
  }
  return new RegExp(`${source}$`, 's').test(value);
}
function oldEvaluate(policy: ToolPolicy, tool: string, subject: string): string {
  for (const rule of policy.rules) {
    if (!oldGlobMatch(rule.tool, tool)) continue;
    if (rule.pattern !== undefined && !oldGlobMatch(rule.pattern, subject)) continue;
    return rule.action;
  }
  return policy.default;
}

const policy: ToolPolicy = {
  rules: [
    { tool: 'bash', pattern: 'rm -rf*', action: 'deny', source: 'team' },
    { tool: 'bash', pattern: 'git *', action: 'allow' },
    { tool: 'bash', pattern: 'npm test*', action: 'allow' },
    { tool: 'write', action: 'ask' },
  ],
  default: 'ask',
};
const lines: Array<[string, string]> = [
  ['one command', 'git status'],
  ['a chain of four', 'git fetch origin && git rebase origin/main && npm test -- --run && git push'],
  ['a pipeline with a substitution', 'git log --oneline $(git merge-base HEAD origin/main)..HEAD | head -20'],
  ['a 2 KiB script', Array.from({ length: 60 }, (_, i) => `git add src/file-${i}.ts`).join('\n')],
];

function time(run: () => void, iterations: number): { perCallUs: number } {
  for (let i = 0; i < Math.min(1000, iterations); i++) run(); // warm-up
  const started = performance.now();
  for (let i = 0; i < iterations; i++) run();
  return { perCallUs: ((performance.now() - started) * 1000) / iterations };
}

const rows = lines.map(([what, command]) => {
  const before = time(() => oldEvaluate(policy, 'bash', command), opts.iterations);
  const now = time(() => evaluatePolicy(policy, 'bash', { command }), opts.iterations);
  return [what, `${command.length}`, `${before.perCallUs.toFixed(1)} µs`, `${now.perCallUs.toFixed(1)} µs`, `${(now.perCallUs / before.perCallUs).toFixed(1)}×`];
});
printTable(['bash line', 'chars', 'old matcher (regex, raw line)', 'now (parsed, every command)', 'ratio'], rows);

// the worst case from the issue: a pattern of stars that a backtracking regex explores exponentially
const worst: ToolPolicy = { rules: [{ tool: 'web_fetch', pattern: '*a*a*a*a*a*a*a*a*a*ab', action: 'deny' }], default: 'allow' };
const worstRows = [24, 30, 36, 8_192].map((length) => {
  // all a's: no match, the old matcher's worst case; ending in b: a match, which makes the new one scan every segment
  const miss = 'a'.repeat(length);
  const hit = `${'a'.repeat(length - 1)}b`;
  const iterations = length > 1000 ? 200 : 2000;
  const nowMiss = time(() => evaluatePolicy(worst, 'web_fetch', { url: miss }), iterations);
  const nowHit = time(() => evaluatePolicy(worst, 'web_fetch', { url: hit }), iterations);
  // past ~30 characters the old matcher takes seconds per call: measured once, and not at all past 36
  const before = length <= 36 ? time(() => oldEvaluate(worst, 'web_fetch', miss), 1) : null;
  return [`${length}`, before ? ms(before.perCallUs / 1000) : 'not run (minutes or more)', ms(nowMiss.perCallUs / 1000), ms(nowHit.perCallUs / 1000)];
});
printTable(['subject chars (pattern *a*a*a*a*a*a*a*a*a*ab)', 'old matcher, no match, one call', 'now, no match', 'now, match'], worstRows);
