// Building the DOM from text: every string becomes a text node, so nothing the API returns (event content is
// written by whoever talks to the agent) is ever parsed as markup. No HTML-parsing API is used anywhere here.

const SVG_NS = 'http://www.w3.org/2000/svg';

/** h('a', { href: '#/x', class: 'link', onclick: fn }, 'text', otherNode) */
export function h(tag, attrs = {}, ...children) {
  return build(document.createElement(tag), attrs, children);
}

/** the same for SVG elements */
export function s(tag, attrs = {}, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

function build(el, attrs, children) {
  for (const [name, value] of Object.entries(attrs ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on') && typeof value === 'function') el.addEventListener(name.slice(2), value);
    else el.setAttribute(name, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** replaces an element's children */
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export const usd = (n) => `$${Number(n ?? 0).toFixed(n > 0 && n < 0.01 ? 4 : 2)}`;
export const when = (iso) => (iso ? new Date(iso).toLocaleString() : '');
export const statusBadge = (status) => h('span', { class: `badge status-${status}`, 'data-status': status }, status);

/** a short error line for a failed request */
export function errorBox(err) {
  return h('p', { class: 'error', role: 'alert' }, err?.message ?? String(err));
}
