#!/usr/bin/env node
// The `agentplane` bin. The CLI is TypeScript like the rest of the project: tsx's loader is registered for this
// process, then cli/main.ts runs. Resolving tsx from this file's folder works from a checkout, `npm link` and npx.
import { register } from 'tsx/esm/api';

register();
const { main } = await import('./main.ts');
process.exitCode = await main(process.argv.slice(2), { env: process.env, stdin: process.stdin, stdout: process.stdout, stderr: process.stderr });
