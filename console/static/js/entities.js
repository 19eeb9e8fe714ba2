// Entities: look up an address (state, version, history page by page) and
// tail it or its workspace live; and the saga view (#/saga), which follows a
// correlation id across entities.
import { call, watch, el, pretty, when, entityHash, sagaHash, addrString } from './api.js';

const PAGE = 20;

export async function render(main, params, ctx) {
  if (ctx.name === 'saga') return renderSaga(main, params, ctx);
  const f = {
    tenant: params.get('tenant') || ctx.me.default_tenant || '',
    workspace: params.get('workspace') || ctx.me.default_workspace || '',
    actor_type: params.get('actor_type') || '',
    entity_id: params.get('entity_id') || '',
  };
  const input = (name, label, value, extra) => [
    el('label', { for: 'ent-' + name }, label),
    el('input', { id: 'ent-' + name, name, value, ...extra }),
  ];
  const rej = el('input', { type: 'checkbox', id: 'ent-rejections', checked: params.get('rejections') !== 'false' });
  const form = el('form', { class: 'grid', id: 'entity-form' },
    input('tenant', 'Tenant', f.tenant, { placeholder: "the token's" }),
    input('workspace', 'Workspace', f.workspace, { placeholder: 'default' }),
    input('actor_type', 'Actor type', f.actor_type, { required: true, placeholder: 'counter' }),
    input('entity_id', 'Entity id', f.entity_id, { required: true, placeholder: 'c1' }),
    el('label', { for: 'ent-rejections' }, 'Rejections too'), rej,
    el('div', { class: 'actions' }, el('button', { type: 'submit', id: 'entity-lookup' }, 'Look up')));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams();
    for (const k of ['tenant', 'workspace', 'actor_type', 'entity_id']) q.set(k, form.elements[k].value.trim());
    q.set('rejections', String(rej.checked));
    const h = '#/entities?' + q.toString();
    if (location.hash === h) render2(); else location.hash = h;
  });
  const out = el('section', { id: 'entity-out', 'aria-live': 'polite' });
  main.append(el('h1', {}, 'Entities'), form, out, tailSection(f, ctx));
  const render2 = () => lookup(out, f, rej.checked, ctx);
  if (f.actor_type && f.entity_id) await render2();
}

function addr(f) {
  return { tenant: f.tenant, workspace: f.workspace, actor_type: f.actor_type, entity_id: f.entity_id };
}

async function lookup(out, f, rejections, ctx) {
  out.replaceChildren(el('p', { class: 'muted' }, 'Loading…'));
  let got;
  try {
    got = await call('POST', 'v1/get', { address: addr(f) }, ctx.signal);
  } catch (e) {
    if (e.name !== 'AbortError') out.replaceChildren(el('p', { role: 'alert', class: 'state-dead' }, e.message));
    return;
  }
  const state = got.state !== undefined ? pretty(got.state) : got.state_base64 ? `(bytes, base64) ${got.state_base64}` : '(no state)';
  const hist = el('div', { id: 'history' });
  out.replaceChildren(
    el('h2', {}, `${got.address.tenant}/${got.address.workspace} ${addrString(got.address)}`),
    el('p', {}, got.found ? 'Version ' : 'Never written; version ', el('strong', { id: 'entity-version' }, String(got.version)),
      ` · shard ${got.shard} · read at applied index ${got.applied_index}`),
    el('h2', {}, 'State'), el('pre', { id: 'entity-state', tabindex: '0' }, state),
    el('h2', {}, 'History'), hist);
  const tokens = ['']; // the page tokens behind us, for Previous
  const page = async (i) => {
    let h;
    try {
      h = await call('POST', 'v1/history', { address: got.address, include_rejections: rejections, page_size: PAGE, page_token: tokens[i] }, ctx.signal);
    } catch (e) {
      if (e.name !== 'AbortError') hist.replaceChildren(el('p', { role: 'alert' }, e.message));
      return;
    }
    if (h.next_page_token) tokens[i + 1] = h.next_page_token;
    const prev = el('button', { type: 'button', class: 'secondary', id: 'history-prev', disabled: i === 0 }, 'Previous page');
    const next = el('button', { type: 'button', class: 'secondary', id: 'history-next', disabled: !h.next_page_token }, 'Next page');
    prev.addEventListener('click', () => page(i - 1));
    next.addEventListener('click', () => page(i + 1));
    hist.replaceChildren(historyTable(h.records || [], `Page ${i + 1}`), el('div', { class: 'row' }, prev, next));
  };
  await page(0);
}

function historyTable(records, caption) {
  const rows = records.map((r) => (r.event ? eventRow(r.event) : rejectionRow(r.rejection)));
  return el('table', { id: 'history-table' },
    el('caption', {}, `${caption}: ${records.length} records`),
    el('thead', {}, el('tr', {}, ['Version', 'Type', 'At', 'Payload', 'Command', 'Causation', 'Correlation'].map((h) => el('th', { scope: 'col' }, h)))),
    el('tbody', {}, rows.length ? rows : el('tr', {}, el('td', { colspan: '7' }, 'No records.'))));
}

function links(x) {
  const a = x.address || {};
  return [
    x.causation_id ? el('a', { href: sagaHash(x.correlation_id || x.causation_id, a.workspace, a.tenant, x.causation_id), class: 'causation' }, short(x.causation_id)) : '',
    x.correlation_id ? el('a', { href: sagaHash(x.correlation_id, a.workspace, a.tenant), class: 'correlation', dataset: { correlation: x.correlation_id } }, short(x.correlation_id)) : '',
  ];
}

function eventRow(e) {
  const [cause, corr] = links(e);
  return el('tr', { dataset: { eventId: e.id, eventType: e.type } },
    el('td', {}, String(e.version)), el('td', {}, e.type), el('td', {}, when(e.at)),
    el('td', {}, el('code', {}, e.payload !== undefined ? JSON.stringify(e.payload) : e.payload_base64 || '')),
    el('td', {}, short(e.command_id)), el('td', {}, cause), el('td', {}, corr));
}

function rejectionRow(r) {
  const [cause, corr] = links(r);
  return el('tr', { class: 'rejection', dataset: { rejection: r.command_id } },
    el('td', {}, `(at ${r.actual_version})`), el('td', {}, `rejected ${r.command_type}`), el('td', {}, when(r.at)),
    el('td', {}, `${r.reason}${r.code ? ' ' + r.code : ''}: ${r.message || ''}`),
    el('td', {}, short(r.command_id)), el('td', {}, cause), el('td', {}, corr));
}

function short(id) {
  return id && id.length > 12 ? id.slice(0, 12) + '…' : id || '';
}

// tailSection streams /v1/watch for the entity in the form or its whole
// workspace, newest at the bottom, until Stop or leaving the page.
function tailSection(f, ctx) {
  const list = el('ol', { class: 'tail', id: 'tail', 'aria-live': 'polite', 'aria-label': 'Live events' });
  const state = el('span', { id: 'tail-state', role: 'status', class: 'muted' }, 'Not tailing.');
  const fromStart = el('input', { type: 'checkbox', id: 'tail-from-beginning' });
  let ctl = null;
  const stop = () => { if (ctl) ctl.abort(); ctl = null; state.textContent = 'Not tailing.'; };
  const start = (scope) => {
    stop();
    ctl = new AbortController();
    const mine = ctl;
    ctx.signal.addEventListener('abort', () => mine.abort(), { once: true });
    const form = document.getElementById('entity-form');
    const v = (k) => form.elements[k].value.trim();
    const p = { tenant: v('tenant'), workspace: v('workspace'), include_rejections: true, from_beginning: fromStart.checked };
    if (scope === 'entity') {
      if (!v('actor_type') || !v('entity_id')) { state.textContent = 'Name an actor type and entity id first.'; return; }
      p.actor_type = v('actor_type'); p.entity_id = v('entity_id');
    }
    list.replaceChildren();
    state.textContent = scope === 'entity' ? `Tailing ${p.actor_type}/${p.entity_id}…` : `Tailing workspace ${p.workspace || 'default'}…`;
    watch(p, (line) => {
      if (line.error) { state.textContent = 'Stream ended: ' + line.error.message; return; }
      const x = line.event || line.rejection;
      const a = x.address;
      list.append(el('li', { dataset: { sequence: String(line.sequence || ''), eventType: line.event ? x.type : 'rejection', eventId: x.id || '' } },
        `#${line.sequence || ''} `, el('a', { href: entityHash(a) }, addrString(a)), ' ',
        line.event ? `v${x.version} ${x.type} ${JSON.stringify(x.payload ?? '')}` : `rejected ${x.command_type}: ${x.reason} ${x.message || ''}`,
        ' ', ...links(x)));
      while (list.children.length > 500) list.firstElementChild.remove();
      list.lastElementChild.scrollIntoView({ block: 'nearest' });
    }, mine.signal).then(() => { if (ctl === mine) state.textContent = 'Stream ended.'; })
      .catch((e) => { if (e.name !== 'AbortError') state.textContent = 'Tail failed: ' + e.message; });
  };
  const bEnt = el('button', { type: 'button', id: 'tail-entity' }, 'Tail this entity');
  const bWs = el('button', { type: 'button', id: 'tail-workspace', class: 'secondary' }, 'Tail the workspace');
  const bStop = el('button', { type: 'button', id: 'tail-stop', class: 'secondary' }, 'Stop');
  bEnt.addEventListener('click', () => start('entity'));
  bWs.addEventListener('click', () => start('workspace'));
  bStop.addEventListener('click', stop);
  return el('section', {}, el('h2', {}, 'Live tail'),
    el('div', { class: 'row' }, bEnt, bWs, bStop, el('label', { for: 'tail-from-beginning' }, fromStart, ' from the oldest kept event'), state), list);
}

// renderSaga lists, live, every event and rejection of a workspace that
// carries one correlation id: a saga's steps across its entities, in the
// order the events stream delivered them.
async function renderSaga(main, params, ctx) {
  const corr = params.get('correlation_id') || '';
  const focus = params.get('focus') || '';
  const tenant = params.get('tenant') || '', workspace = params.get('workspace') || '';
  const state = el('p', { role: 'status', class: 'muted', id: 'saga-state' }, 'Reading the events stream…');
  const body = el('tbody', {});
  const entities = el('ul', { id: 'saga-entities' });
  const seen = new Set();
  main.append(el('h1', {}, 'Saga'),
    el('p', {}, 'Every event and rejection with correlation id ', el('code', { id: 'saga-correlation' }, corr),
      ` in ${tenant || "the token's tenant"}/${workspace || 'default'}, from the oldest kept event on, live.`,
      focus ? [' The cause ', el('code', {}, focus), ' is highlighted.'] : ''),
    state, el('h2', {}, 'Entities'), entities,
    el('h2', {}, 'Steps'),
    el('table', { id: 'saga-table' },
      el('thead', {}, el('tr', {}, ['Entity', 'Version', 'Type', 'At', 'Payload', 'Event / command', 'Causation'].map((h) => el('th', { scope: 'col' }, h)))),
      body));
  let n = 0;
  watch({ tenant, workspace, from_beginning: true, include_rejections: true }, (line) => {
    if (line.error) { state.textContent = 'Stream ended: ' + line.error.message; return; }
    const x = line.event || line.rejection;
    if (!x || x.correlation_id !== corr) return;
    n++;
    const a = x.address;
    const key = addrString(a);
    if (!seen.has(key)) {
      seen.add(key);
      entities.append(el('li', {}, el('a', { href: entityHash(a), class: 'saga-entity', dataset: { entity: key } }, key)));
    }
    const hit = focus && (x.id === focus || x.command_id === focus);
    body.append(el('tr', { class: hit ? 'focus' : (line.event ? '' : 'rejection'), dataset: { entity: key, eventType: line.event ? x.type : 'rejection' } },
      el('td', {}, el('a', { href: entityHash(a) }, key)),
      el('td', {}, line.event ? String(x.version) : `(at ${x.actual_version})`),
      el('td', {}, line.event ? x.type : `rejected ${x.command_type}`), el('td', {}, when(x.at)),
      el('td', {}, el('code', {}, line.event ? JSON.stringify(x.payload ?? '') : `${x.reason}: ${x.message || ''}`)),
      el('td', {}, `${short(x.id || '')} / ${short(x.command_id)}`),
      el('td', {}, x.causation_id ? el('a', { href: sagaHash(corr, workspace, tenant, x.causation_id) }, short(x.causation_id)) : '')));
    state.textContent = `${n} steps across ${seen.size} entities; live.`;
  }, ctx.signal).catch((e) => { if (e.name !== 'AbortError') state.textContent = 'Saga view failed: ' + e.message; });
}
