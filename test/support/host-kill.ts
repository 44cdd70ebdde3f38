/**
 * A host is lost: every process that belongs to a worker's data dir gets SIGKILL. A worker's helpers (its gateway
 * daemon, its model bridges) name the data dir on their command line; a session's sandboxed processes do not (bwrap
 * reads its options from a file descriptor) but have its directories mounted, which their mount table shows.
 */
import { readdirSync, readFileSync } from 'node:fs';

/** The processes of a worker's host (besides the worker itself): the ones that name its data dir or mount it. */
export function hostProcesses(dataDir: string): number[] {
  return readdirSync('/proc')
    .map(Number)
    .filter((pid) => Number.isInteger(pid) && pid !== process.pid && (mentions(`/proc/${pid}/cmdline`, dataDir) || mentions(`/proc/${pid}/mountinfo`, dataDir)));
}

export function killHostProcesses(dataDir: string): number {
  let killed = 0;
  for (let round = 0; round < 3; round++) {
    let found = 0;
    for (const pid of hostProcesses(dataDir)) {
      try {
        process.kill(pid, 'SIGKILL');
        found++;
      } catch {
        // gone already
      }
    }
    killed += found;
    if (found === 0) break;
  }
  return killed;
}

function mentions(path: string, text: string): boolean {
  try {
    return readFileSync(path).toString().replaceAll('\0', ' ').includes(text);
  } catch {
    return false;
  }
}
