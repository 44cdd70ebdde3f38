/**
 * A host is lost: every process that belongs to a worker's data dir gets SIGKILL. A worker's helpers (its gateway
 * daemon, its model bridges) name the data dir on their command line; a session's sandboxed processes do not (bwrap
 * reads its options from a file descriptor) but have its directories mounted, which their mount table shows.
 */
import { readdirSync, readFileSync } from 'node:fs';

export function killHostProcesses(dataDir: string): number {
  let killed = 0;
  for (let round = 0; round < 3; round++) {
    let found = 0;
    for (const entry of readdirSync('/proc')) {
      const pid = Number(entry);
      if (!Number.isInteger(pid) || pid === process.pid) continue;
      if (!mentions(`/proc/${pid}/cmdline`, dataDir) && !mentions(`/proc/${pid}/mountinfo`, dataDir)) continue;
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
