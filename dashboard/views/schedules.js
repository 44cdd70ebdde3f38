// Placeholder. Schedules (and their run history) come with the schedules API on the `schedules` branch; this tab
// is where that view goes, built like the others (one mount(), reading GET /v1/schedules through api.js).
import { h } from '../dom.js';

export function mount(root) {
  root.append(h('h1', {}, 'Schedules'), h('p', { class: 'empty' }, 'Schedules and their run history will appear here once the schedules API is merged.'));
}
