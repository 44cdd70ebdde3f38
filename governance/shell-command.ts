/**
 * What a bash command line runs, read by a real shell parser (unbash) so a policy rule sees each command the
 * shell would run, not one string that a chained command can hide behind. Pure: no I/O, no Node built-ins.
 *
 * What must stay true:
 * - every simple command anywhere in the line is listed: pipelines, `;`, `&&`, `||`, newlines, `&`, subshells,
 *   `{ }` groups, if/for/while/until/case/select bodies, function bodies, coprocesses, `$(…)`, backticks, `<(…)`,
 *   `>(…)`, substitutions inside heredocs and arithmetic, and the string given to `eval` or `sh -c`;
 * - a command reads as its words after quote removal joined by single spaces, so `'r''m'  -rf ~` reads
 *   `rm -rf ~`; assignments before it and its redirections are not words;
 * - anything that makes the listed commands an incomplete account of what runs is a reason in `unsafe`; an
 *   allow rule never vouches for such a line.
 */
import { forEachChild, parse, type Command, type Redirect, type SyntaxNode, type Word } from 'unbash';

export interface CommandLine {
  /** every command the line runs, normalised (see above); an allow rule must match each of them */
  commands: string[];
  /**
   * more readings a deny or ask rule is matched against: the command without its directory (`/bin/rm -rf ~` also
   * reads `rm -rf ~`) and, for a wrapper, each tail of its words (`sudo -u bob rm -rf ~` also reads `rm -rf ~`)
   */
  variants: string[];
  /** why an allow rule cannot vouch for the line, each named once; empty when it can */
  unsafe: string[];
  /** false when the line is nested too deeply to read whole: then the lists above may miss commands */
  complete: boolean;
}

/** Commands that run the command in their arguments. A deny of `rm *` also sees the `rm` in `sudo -u bob rm`. */
const WRAPPERS = new Set(['sudo', 'doas', 'env', 'nohup', 'nice', 'ionice', 'timeout', 'time', 'command', 'builtin', 'exec', 'xargs', 'stdbuf', 'setsid', 'chroot', 'watch', 'strace', 'ltrace']);
/** how far into a wrapper's words its command may start (options and their values before it) */
const WRAPPER_REACH = 8;
/** Shells whose `-c` string is itself a command line. */
const SHELLS = new Set(['bash', 'sh', 'dash', 'zsh', 'ksh', 'ash', 'mksh']);
/** eval inside `sh -c` inside eval …: past this depth the line is not read further */
const MAX_NESTED_LINES = 4;
/** how deep the syntax tree is read: about 20 levels of `$(…)`, far past what anyone writes */
const MAX_DEPTH = 100;
/** Absolute paths a redirection may write to without leaving the workspace. */
const SAFE_DEVICES = new Set(['/dev/null', '/dev/stdout', '/dev/stderr']);
/** Redirections that open a file for writing; `>&` does too unless its target is a descriptor. */
const WRITING = new Set(['>', '>>', '>|', '&>', '&>>', '<>']);

export const UNSAFE = {
  substitution: 'command substitution',
  process: 'process substitution',
  outside: 'output redirection outside the workspace',
  network: 'redirection to /dev/tcp or /dev/udp',
  name: 'command name is not a literal word',
  assignment: 'variable assignment',
  expandedString: 'eval or sh -c of an expanded string',
  nested: 'nested too deeply to read whole',
  unreadable: 'the shell parser cannot read it',
} as const;

interface Reading {
  commands: string[];
  variants: string[];
  unsafe: Set<string>;
  complete: boolean;
}

export function readCommandLine(line: string): CommandLine {
  const reading: Reading = { commands: [], variants: [], unsafe: new Set(), complete: true };
  readLine(line, reading, 0);
  // a repeated command reads the same: matching it once is enough
  return { commands: [...new Set(reading.commands)], variants: [...new Set(reading.variants)], unsafe: [...reading.unsafe], complete: reading.complete };
}

function readLine(line: string, reading: Reading, depth: number): void {
  if (depth > MAX_NESTED_LINES) return unreadable(reading, UNSAFE.nested);
  try {
    walk(parse(line), line, reading, depth);
  } catch {
    // the parser gave up (it never should); what was read so far stands
    unreadable(reading, UNSAFE.unreadable);
  }
}

function unreadable(reading: Reading, why: string): void {
  reading.unsafe.add(why);
  reading.complete = false;
}

/**
 * Depth-first, in source order, without recursion. unbash resolves a substitution's script (and a word's parts)
 * when first visited, each time reading to the end of its region; bounding the depth bounds that work to
 * O(MAX_DEPTH × len(line)), where the parser's own limit (256 levels) would allow far more.
 */
function walk(root: SyntaxNode, line: string, reading: Reading, depth: number): void {
  // `source` is the text node positions index: a script decoded from escaped backticks carries its own
  const stack: Array<{ node: SyntaxNode; source: string; level: number }> = [{ node: root, source: line, level: 0 }];
  for (let next = stack.pop(); next; next = stack.pop()) {
    const { node, level } = next;
    let source = next.source;
    switch (node.type) {
      case 'Script':
        // a nested script (a substitution's) reports its own errors
        if (node.errors?.length) reading.unsafe.add(`${UNSAFE.unreadable} (${node.errors[0]!.message})`);
        if (node.source !== undefined) source = node.source;
        break;
      case 'Command':
        readCommand(node, reading, depth);
        break;
      case 'TestCommand':
      case 'ArithmeticCommand':
      case 'ArithmeticFor':
        // `[[ … ]]` and `(( … ))` run no program, but arithmetic can run code through an array subscript: an allow
        // rule must name them like any command
        reading.commands.push(source.slice(node.pos, node.end).split(/\s+/).join(' '));
        break;
      case 'For':
      case 'Select':
        reading.unsafe.add(UNSAFE.assignment);
        break;
      case 'CommandExpansion':
      case 'ArithmeticCommandExpansion':
        reading.unsafe.add(UNSAFE.substitution);
        break;
      case 'ProcessSubstitution':
        reading.unsafe.add(UNSAFE.process);
        break;
      case 'Redirect':
        readRedirect(node, reading);
        break;
    }
    const children: SyntaxNode[] = [];
    forEachChild(node, (child) => children.push(child));
    if (children.length > 0 && level >= MAX_DEPTH) {
      unreadable(reading, UNSAFE.nested);
      continue;
    }
    for (let i = children.length - 1; i >= 0; i -= 1) stack.push({ node: children[i]!, source, level: level + 1 });
  }
}

/** A command's word as the shell will see it: its value after quote removal, and whether it is taken as written. */
interface Arg {
  value: string;
  literal: boolean;
}

function readCommand(command: Command, reading: Reading, depth: number): void {
  // `PATH=/tmp/x git status`, `GIT_SSH_COMMAND='rm -rf ~' git fetch`, or `PATH=…` alone before `; git status`:
  // the assignment changes what the allowed command does
  if (command.prefix.some((p) => p.type === 'Assignment')) reading.unsafe.add(UNSAFE.assignment);
  if (!command.name) return;
  if (!isLiteral(command.name)) reading.unsafe.add(UNSAFE.name);
  const args: Arg[] = [{ value: command.name.value, literal: isLiteral(command.name) }];
  for (const arg of command.suffix) {
    if (arg.type === 'Word') args.push({ value: arg.value, literal: isLiteral(arg) });
    else if (arg.type === 'Assignment') {
      // `export A=b`: an argument of the command
      const value = arg.value.type === 'Word' ? arg.value.value : `(${arg.value.elements.map((e) => e.value).join(' ')})`;
      const literal = arg.value.type === 'Word' ? isLiteral(arg.value) : arg.value.elements.every(isLiteral);
      args.push({ value: `${arg.name}${arg.index ? `[${arg.index.value}]` : ''}${arg.append ? '+=' : '='}${value}`, literal });
    }
  }
  reading.commands.push(joined(args));
  readArgs(args, reading, depth, true);
}

const joined = (args: Arg[]) => args.map((a) => a.value).join(' ');

/**
 * The readings of one command beyond the command itself: without its directory, what it wraps, what it evals.
 * Returns whether it read a nested line. At most one per command, so the nested lines of one depth together are
 * no longer than the line they came from.
 */
function readArgs(args: Arg[], reading: Reading, depth: number, outermost: boolean): boolean {
  const name = args[0]!.value;
  const base = name.slice(name.lastIndexOf('/') + 1);
  if (base !== name) reading.variants.push([base, ...args.slice(1).map((a) => a.value)].join(' '));
  if (base === 'eval') {
    // eval joins its arguments with spaces and runs the result: an expansion in them is code chosen at run time
    if (!args.slice(1).every((a) => a.literal)) reading.unsafe.add(UNSAFE.expandedString);
    readLine(joined(args.slice(1)), reading, depth + 1);
    return true;
  }
  if (SHELLS.has(base)) {
    const at = shellCommandString(args.map((a) => a.value));
    if (at === null) return false;
    if (!args[at]!.literal) reading.unsafe.add(UNSAFE.expandedString);
    readLine(args[at]!.value, reading, depth + 1);
    return true;
  }
  if (outermost && WRAPPERS.has(base)) {
    // each tail is a reading, and nested wrappers (`sudo env nice rm`) are tails too: no need to recurse further
    for (let i = 1; i < args.length && i <= WRAPPER_REACH; i += 1) {
      // `-u bob rm …`: an option is never the wrapped command
      if (args[i]!.value.startsWith('-')) continue;
      reading.variants.push(joined(args.slice(i)));
      // `sudo bash -c '…'`: the rest of the words belong to the nested line, read whole
      if (readArgs(args.slice(i), reading, depth, false)) break;
    }
  }
  return false;
}

/** The index of the string a shell runs with `-c` (`bash -lc 'cmd'`, `sh -e -c -- 'cmd'`), or null. */
function shellCommandString(values: string[]): number | null {
  let sawC = false;
  for (let i = 1; i < values.length; i += 1) {
    const word = values[i]!;
    if (word === '--') return sawC && i + 1 < values.length ? i + 1 : null;
    if (/^[-+][A-Za-z]+$/.test(word)) {
      if (word.startsWith('-') && word.includes('c')) sawC = true;
      // `-o pipefail`, `-O extglob`: the option's value is the next word
      if (/[oO]$/.test(word)) i += 1;
      continue;
    }
    if (word.startsWith('--')) continue;
    return sawC ? i : null;
  }
  return null;
}

function readRedirect(redirect: Redirect, reading: Reading): void {
  const target = redirect.target;
  if (target && /^\/dev\/(tcp|udp)\//.test(target.value)) reading.unsafe.add(UNSAFE.network);
  // `2>&1` and `>&-` duplicate or close a descriptor; `>&file` writes to the file like `&>file`
  const writes = WRITING.has(redirect.operator) || (redirect.operator === '>&' && !(target && isLiteral(target) && /^(\d+|-)$/.test(target.value)));
  if (writes && !(target && insideWorkspace(target))) reading.unsafe.add(UNSAFE.outside);
}

/** A relative path that cannot climb out (no `..`, no `~`, nothing expanded), or a harmless device. */
function insideWorkspace(target: Word): boolean {
  if (!isLiteral(target)) return false;
  const path = target.value;
  if (SAFE_DEVICES.has(path)) return true;
  if (path === '' || path.startsWith('/') || path.startsWith('~')) return false;
  return !path.split('/').includes('..');
}

/** A word the shell takes as written: quoted or plain text, no expansion, no glob, no brace expansion. */
function isLiteral(word: Word): boolean {
  return (word.parts ?? []).every(
    (part) =>
      part.type === 'Literal' ||
      part.type === 'SingleQuoted' ||
      part.type === 'AnsiCQuoted' ||
      ((part.type === 'DoubleQuoted' || part.type === 'LocaleString') && part.parts.every((p) => p.type === 'Literal')),
  );
}
