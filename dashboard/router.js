// The URL hash is the dashboard's state: '#/fleet?status=running' is the fleet filtered to running sessions, so a
// reload or a shared link shows the same page.

/** '#/fleet?status=running' → { path: 'fleet', query: { status: 'running' } } */
export function parseHash(hash = location.hash) {
  const [path, search = ''] = hash.replace(/^#\/?/, '').split('?');
  return { path, query: Object.fromEntries(new URLSearchParams(search)) };
}

/** navigates to a view with a query, dropping empty values */
export function go(path, query = {}) {
  const search = new URLSearchParams(Object.entries(query).filter(([, v]) => v !== undefined && v !== null && v !== ''));
  location.hash = `#/${path}${search.size ? `?${search}` : ''}`;
}
