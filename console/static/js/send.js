// Send: submit one command through /v1/submit and show its result, with the
// curl and CLI commands that would send the same.
import { call, el, pretty, entityHash } from './api.js';

export async function render(main, params, ctx) {
  const field = (name, label, attrs) => [el('label', { for: 'send-' + name }, label), el('input', { id: 'send-' + name, name, ...attrs })];
  const form = el('form', { class: 'grid', id: 'send-form' },
    field('tenant', 'Tenant', { value: params.get('tenant') || ctx.me.default_tenant || '', placeholder: "the token's" }),
    field('workspace', 'Workspace', { value: params.get('workspace') || ctx.me.default_workspace || '', placeholder: 'default' }),
    field('actor_type', 'Actor type', { value: params.get('actor_type') || '', required: true, placeholder: 'counter' }),
    field('entity_id', 'Entity id', { value: params.get('entity_id') || '', required: true, placeholder: 'c1' }),
    field('type', 'Command type', { required: true, placeholder: 'cmd.counter.add or the verb, add' }),
    el('label', { for: 'send-payload' }, 'Payload (JSON)'),
    el('textarea', { id: 'send-payload', name: 'payload', spellcheck: 'false', placeholder: '{"amount": 5}' }),
    field('idempotency_key', 'Idempotency key', { value: newKey(), required: true }),
    field('expected_version', 'Expected version', { inputmode: 'numeric', placeholder: 'any', pattern: '[0-9]*' }),
    field('correlation_id', 'Correlation id', { placeholder: 'the command id' }),
    el('div', { class: 'actions' }, el('button', { type: 'submit', id: 'send-submit' }, 'Send'),
      el('button', { type: 'button', class: 'secondary', id: 'send-new-key' }, 'New idempotency key')));
  const out = el('section', { id: 'send-out', 'aria-live': 'polite' });
  main.append(el('h1', {}, 'Send a command'),
    el('p', {}, 'Retrying with the same idempotency key applies the command once; the answer then says duplicate or replay.'),
    form, out);
  form.querySelector('#send-new-key').addEventListener('click', () => { form.elements.idempotency_key.value = newKey(); });
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const v = (k) => form.elements[k].value.trim();
    const actorType = v('actor_type');
    let type = v('type');
    if (type && !type.includes('.')) type = `cmd.${actorType}.${type}`;
    const req = {
      address: { tenant: v('tenant'), workspace: v('workspace'), actor_type: actorType, entity_id: v('entity_id') },
      type, idempotency_key: v('idempotency_key'),
    };
    if (!req.address.tenant) delete req.address.tenant;
    if (!req.address.workspace) delete req.address.workspace;
    const payload = v('payload');
    if (payload) {
      try { req.payload = JSON.parse(payload); } catch (e) {
        out.replaceChildren(el('p', { role: 'alert', class: 'state-dead', id: 'send-error' }, 'The payload is not valid JSON: ' + e.message));
        form.elements.payload.focus();
        return;
      }
    }
    if (v('expected_version') !== '') {
      if (!/^\d+$/.test(v('expected_version'))) {
        out.replaceChildren(el('p', { role: 'alert', class: 'state-dead', id: 'send-error' }, 'Expected version must be a whole number (or empty for any).'));
        return;
      }
      req.expected_version = Number(v('expected_version'));
    }
    if (v('correlation_id')) req.correlation_id = v('correlation_id');
    const button = form.querySelector('#send-submit');
    button.disabled = true;
    const equivalents = [el('h2', {}, 'curl'), el('pre', { id: 'send-curl', tabindex: '0' }, curl(req)),
      el('h2', {}, 'CLI'), el('pre', { id: 'send-cli', tabindex: '0' }, cli(req))];
    try {
      const resp = await call('POST', 'v1/submit', req, ctx.signal);
      const r = resp.result;
      const a = { ...req.address, tenant: (r.events && r.events[0] && r.events[0].address.tenant) || req.address.tenant, workspace: (r.events && r.events[0] && r.events[0].address.workspace) || req.address.workspace };
      out.replaceChildren(
        el('h2', {}, 'Result'),
        el('p', { id: 'send-status', dataset: { status: r.status } }, el('strong', {}, r.status),
          r.reason ? ` (${r.reason}${r.code ? ' ' + r.code : ''}: ${r.message || ''})` : '',
          ` · version ${r.version} · shard ${resp.shard}`, r.duplicate ? ' · duplicate' : '', r.replay ? ' · replay' : '', ' · ',
          el('a', { href: entityHash(a), id: 'send-entity-link' }, 'Open the entity')),
        el('pre', { id: 'send-result', tabindex: '0' }, pretty(resp)), ...equivalents);
      form.elements.idempotency_key.value = newKey();
    } catch (e) {
      if (e.name === 'AbortError') return;
      out.replaceChildren(el('p', { role: 'alert', class: 'state-dead', id: 'send-error' },
        `${e.code || 'error'}: ${e.message}`, e.outcome === 'unknown' ? ' — the outcome is unknown: send again with the same idempotency key.' : ''), ...equivalents);
    } finally {
      button.disabled = false;
    }
  });
}

function newKey() {
  const b = new Uint8Array(8);
  crypto.getRandomValues(b);
  return 'ui-' + [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
}

// sq quotes s for a POSIX shell.
function sq(s) {
  return "'" + String(s).replace(/'/g, "'\\''") + "'";
}

function curl(req) {
  const base = new URL('..', document.baseURI).toString().replace(/\/$/, '');
  return `curl -s -H "Authorization: Bearer $RHIZON_TOKEN" ${base}/v1/submit -d ${sq(JSON.stringify(req))}`;
}

function cli(req) {
  const a = req.address;
  const parts = ['rhizon', 'send', `${a.actor_type}/${a.entity_id}`, req.type];
  if (req.payload !== undefined) parts.push(sq(JSON.stringify(req.payload)));
  parts.push('--idempotency-key', sq(req.idempotency_key));
  if (a.tenant) parts.push('--tenant', sq(a.tenant));
  if (a.workspace) parts.push('--workspace', sq(a.workspace));
  if (req.expected_version !== undefined) parts.push('--expected-version', String(req.expected_version));
  if (req.correlation_id) parts.push('--correlation-id', sq(req.correlation_id));
  return parts.join(' ');
}
