// Dead letters (role admin): the dead-letter stream page by page, one letter
// inspected in full, and a redrive of a letter whose command could apply
// now (a "poison" one: authenticated and valid, but it kept failing on the
// node, e.g. an actor type not deployed yet).
import { call, el, pretty, when } from './api.js';

const PAGE = 50;

export async function render(main, _params, ctx) {
  main.append(el('h1', {}, 'Dead letters'));
  if (ctx.me.role !== 'admin') {
    main.append(el('p', { id: 'dead-letters-denied' }, 'Dead letters are for tokens with role admin: they hold every tenant\'s failed commands.'));
    return;
  }
  const state = el('p', { role: 'status', class: 'muted', id: 'dl-state' }, 'Loading…');
  const list = el('div', { id: 'dl-list' });
  const detail = el('section', { id: 'dl-detail', 'aria-live': 'polite' });
  const refresh = el('button', { type: 'button', id: 'dl-refresh' }, 'Refresh');
  main.append(el('p', {}, 'Messages the JetStream ingress could not apply: "rejected" ones never can as they are; "poison" ones kept failing on the node and can be redriven once it can take them (the command keeps its idempotency key, so it applies at most once).'),
    el('div', { class: 'row' }, refresh, state), list, detail);
  const afters = [0];
  const page = async (i) => {
    let resp;
    try {
      resp = await call('GET', `v1/admin/dead_letters?after=${afters[i]}&limit=${PAGE}`, undefined, ctx.signal);
    } catch (e) {
      if (e.name !== 'AbortError') state.textContent = e.message;
      return;
    }
    if (resp.next) afters[i + 1] = resp.next;
    const rows = resp.dead_letters.map((d) => row(d, detail, state, ctx));
    const prev = el('button', { type: 'button', class: 'secondary', disabled: i === 0 }, 'Previous page');
    const next = el('button', { type: 'button', class: 'secondary', id: 'dl-next', disabled: !resp.next }, 'Next page');
    prev.addEventListener('click', () => page(i - 1));
    next.addEventListener('click', () => page(i + 1));
    list.replaceChildren(el('table', { id: 'dl-table' },
      el('caption', {}, `Page ${i + 1}: ${rows.length} dead letters`),
      el('thead', {}, el('tr', {}, ['Sequence', 'At', 'Shard', 'Kind', 'Reason', 'Size', 'Actions'].map((h) => el('th', { scope: 'col' }, h)))),
      el('tbody', {}, rows.length ? rows : el('tr', {}, el('td', { colspan: '7' }, 'No dead letters.')))),
    el('div', { class: 'row' }, prev, next));
    state.textContent = `Updated ${new Date().toLocaleTimeString()}.`;
    current = i;
  };
  let current = 0;
  refresh.addEventListener('click', () => page(current));
  await page(0);
}

function row(d, detail, state, ctx) {
  const inspect = el('button', { type: 'button', class: 'secondary dl-inspect' }, 'Inspect');
  const redrive = el('button', { type: 'button', class: 'dl-redrive', disabled: !d.redrivable, title: d.not_redrivable || 'Publish the command again' }, 'Redrive');
  inspect.addEventListener('click', () => {
    detail.replaceChildren(...[
      el('h2', { tabindex: '-1', id: 'dl-detail-title' }, `Dead letter ${d.sequence}`),
      el('p', {}, `${d.kind}: ${d.reason}`),
      el('p', {}, `From ${d.source}; ${d.size} bytes (${d.digest}).`),
      d.redrivable ? '' : el('p', { class: 'muted' }, 'Not redrivable: ' + d.not_redrivable),
      d.command ? [el('h3', {}, 'Command'), el('pre', { id: 'dl-command', tabindex: '0' }, pretty(d.command))] : '',
      el('h3', {}, d.command ? 'Body (as stored: protobuf or JSON)' : 'Body'), el('pre', { tabindex: '0' }, d.body !== undefined ? d.body : `(base64) ${d.body_base64 || ''}`),
      Object.keys(d.headers || {}).length ? [el('h3', {}, 'Headers'), el('pre', { tabindex: '0' }, pretty(d.headers))] : '',
    ].flat());
    detail.querySelector('h2').focus();
  });
  redrive.addEventListener('click', async () => {
    redrive.disabled = true;
    try {
      const r = await call('POST', 'v1/admin/dead_letters/redrive', { sequence: d.sequence }, ctx.signal);
      state.textContent = `Dead letter ${d.sequence} redriven: stored as ${r.stream} sequence ${r.sequence} (shard ${r.shard})${r.duplicate ? ', a duplicate of a redrive moments ago' : ''}.`;
      state.dataset.redriven = String(d.sequence);
    } catch (e) {
      if (e.name !== 'AbortError') state.textContent = `Redrive of ${d.sequence} failed: ${e.message}`;
    } finally {
      redrive.disabled = !d.redrivable;
    }
  });
  return el('tr', { dataset: { sequence: String(d.sequence), kind: d.kind, redrivable: String(d.redrivable) } },
    el('th', { scope: 'row' }, String(d.sequence)), el('td', {}, when(d.at)), el('td', {}, String(d.shard)),
    el('td', {}, d.kind), el('td', {}, d.reason), el('td', {}, String(d.size)),
    el('td', {}, el('div', { class: 'row' }, inspect, redrive)));
}
