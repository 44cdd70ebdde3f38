/**
 * The web dashboard: static files from dashboard/ under /ui, with no build step. The files are read once, when the
 * app is built, into a map keyed by their path: a request can only ever name one of them, so no path from a URL
 * reaches the file system. The page talks to /v1 with the same API key as any client (see dashboard/api.js).
 *
 * One package module is served with them: `eventsource-parser` (the parser the runtimes and the CLI read SSE with,
 * runtimes/kit/sse.ts) as `/ui/lib/eventsource-parser.js`, its ES module build read from the installed package, which
 * imports nothing, so the browser loads it as it is: one parser everywhere, without a bundler or a copy in the repo.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { App } from '../create-app';

const DASHBOARD_DIR = fileURLToPath(new URL('../../dashboard/', import.meta.url));

const CONTENT_TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
};

/**
 * Scripts, styles and requests only from this origin, no inline script or style (the page builds its DOM from text
 * nodes, so an event that smuggles markup has nothing to run with), and no framing.
 */
export const DASHBOARD_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

interface StaticFile {
  body: Uint8Array;
  type: string;
}

function loadFiles(dir: string, files = new Map<string, StaticFile>(), prefix = ''): Map<string, StaticFile> {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) loadFiles(path, files, `${prefix}${entry.name}/`);
    const type = CONTENT_TYPES[extname(entry.name)];
    if (entry.isFile() && type) files.set(`${prefix}${entry.name}`, { body: readFileSync(path), type });
  }
  return files;
}

/** The installed package's self-contained ES module, without its source-map comment (the map is not served). */
function eventsourceParser(): StaticFile {
  const pkg = dirname(createRequire(import.meta.url).resolve('eventsource-parser/package.json'));
  const source = readFileSync(join(pkg, 'dist', 'index.js'), 'utf8').replace(/\n\/\/# sourceMappingURL=\S+\s*$/, '\n');
  return { body: new TextEncoder().encode(source), type: CONTENT_TYPES['.js']! };
}

export function registerDashboardRoutes(app: App): void {
  const files = loadFiles(DASHBOARD_DIR);
  files.set('lib/eventsource-parser.js', eventsourceParser());
  app.get('/', (c) => c.redirect('/ui/', 302));
  app.get('/ui', (c) => c.redirect('/ui/', 301));
  app.get('/ui/*', (c, next) => {
    const name = c.req.path.slice('/ui/'.length) || 'index.html';
    const file = files.get(name);
    if (!file) return next();
    return c.body(file.body as Uint8Array<ArrayBuffer>, 200, {
      'content-type': file.type,
      'content-security-policy': DASHBOARD_CSP,
      'x-content-type-options': 'nosniff',
      'referrer-policy': 'no-referrer',
      // the files change with a deploy; a reload must pick up a new version
      'cache-control': 'no-cache',
    });
  });
}
