/**
 * `npm run build`: bundles the workflow code the way the worker does, so a sandbox violation (a Node built-in,
 * a non-deterministic import) fails the build instead of the first worker start. Writes dist/workflow-bundle.js.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { bundleWorkflows } from '../worker/create-worker';

const bundle = await bundleWorkflows();
await mkdir('dist', { recursive: true });
await writeFile('dist/workflow-bundle.js', bundle.code);
console.log(`dist/workflow-bundle.js: ${(bundle.code.length / 1024).toFixed(0)} KiB`);
