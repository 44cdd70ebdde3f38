/**
 * The CLI's exit codes, documented in README.md and `agentplane help`. Scripts branch on them, so they never change
 * meaning: add a new code rather than reuse one.
 */
export const EXIT = {
  ok: 0,
  /** the API answered with an error (409, 5xx) or could not be reached */
  api: 1,
  /** the command line or an agent file is wrong (also the API's 400: it names the field) */
  usage: 2,
  /** the API says the thing does not exist (404), or no agent has the name given */
  notFound: 3,
  /** no key, or the API refused it (401, 403) */
  auth: 4,
} as const;

export type ExitCode = (typeof EXIT)[keyof typeof EXIT];

export class CliError extends Error {
  constructor(
    readonly exitCode: ExitCode,
    message: string,
  ) {
    super(message);
  }
}

export const usageError = (message: string) => new CliError(EXIT.usage, message);

export function exitCodeForStatus(status: number): ExitCode {
  if (status === 401 || status === 403) return EXIT.auth;
  if (status === 404) return EXIT.notFound;
  if (status === 400 || status === 422) return EXIT.usage;
  return EXIT.api;
}
