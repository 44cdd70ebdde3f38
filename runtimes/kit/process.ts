/**
 * Runtime processes outlive the worker that started them (a new worker reattaches), so they are found again by a
 * recorded pid. These are the checks every such lookup needs; what proves a pid is still *ours* (its command line,
 * its environment) is each runtime's own.
 */

/** Whether a process with this pid exists (EPERM: it does, but belongs to someone else). */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
