// The registry mirror reachable here serves opencode-ai's binary only for linux-x64, so `npm install` writes a
// lockfile without the other platforms' optional packages, and `npm ci` then refuses it as out of sync.
// Run `node scripts/fix-lockfile.mjs` after any `npm install` to add the missing optional entries back.
import { readFileSync, writeFileSync } from 'node:fs';

const PLATFORMS = {
  'opencode-linux-arm64': ['linux', 'arm64'],
  'opencode-linux-x64-musl': ['linux', 'x64'],
  'opencode-linux-arm64-musl': ['linux', 'arm64'],
  'opencode-linux-x64-baseline-musl': ['linux', 'x64'],
  'opencode-darwin-arm64': ['darwin', 'arm64'],
  'opencode-darwin-x64': ['darwin', 'x64'],
  'opencode-darwin-x64-baseline': ['darwin', 'x64'],
  'opencode-windows-x64': ['win32', 'x64'],
  'opencode-windows-x64-baseline': ['win32', 'x64'],
  'opencode-windows-arm64': ['win32', 'arm64'],
};

const lock = JSON.parse(readFileSync('package-lock.json', 'utf8'));
const version = lock.packages['node_modules/opencode-ai'].version;
let added = 0;
for (const [name, [os, cpu]] of Object.entries(PLATFORMS)) {
  const key = `node_modules/${name}`;
  if (lock.packages[key]) continue;
  lock.packages[key] = { version, cpu: [cpu], optional: true, os: [os] };
  added += 1;
}
lock.packages = Object.fromEntries(Object.entries(lock.packages).sort(([a], [b]) => (a === '' ? -1 : b === '' ? 1 : a.localeCompare(b))));
writeFileSync('package-lock.json', `${JSON.stringify(lock, null, 2)}\n`);
console.log(`package-lock.json: ${added} optional platform entries added`);
