// The node's HTTP/JSON API, with the token kept in this tab's session
// storage. Every URL is relative to the page (/ui/), so the console works
// behind TLS and behind a proxy that serves the node under a path prefix.

const KEY = 'rhizon.token';

export const token = {
  get: () => sessionStorage.getItem(KEY) || '',
  set: (t) => sessionStorage.setItem(KEY, t),
  clear: () => sessionStorage.removeItem(KEY),
};

// APIError carries the JSONError the gateway answered with.
export class APIError extends Error {
  constructor(status, body) {
    super(body && body.message ? body.message : `HTTP ${status}`);
    this.status = status;
    this.code = body && body.code;
    this.outcome = body && body.outcome;
  }
}

export function url(path) {
  return new URL('../' + path.replace(/^\//, ''), document.baseURI).toString();
}

function headers(extra) {
  const h = { ...extra };
  const t = token.get();
  if (t) h.Authorization = 'Bearer ' + t;
  return h;
}

// call sends one API request and returns its decoded JSON; a failure throws
// an APIError with the gateway's message.
export async function call(method, path, body, signal) {
  const init = { method, headers: headers(body === undefined ? {} : { 'Content-Type': 'application/json' }), signal };
  if (body !== undefined) init.body = JSON.stringify(body);
  const resp = await fetch(url(path), init);
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = { message: text }; }
  if (!resp.ok) throw new APIError(resp.status, data);
  return data;
}

// metricsText fetches the node's Prometheus text (no token needed).
export async function metricsText(signal) {
  const resp = await fetch(url('metrics'), { signal });
  if (!resp.ok) throw new APIError(resp.status, { message: 'metrics: HTTP ' + resp.status });
  return resp.text();
}

// watch streams /v1/watch (newline-delimited JSON) and calls onLine with each
// decoded line until signal aborts or the stream ends. EventSource cannot
// send an Authorization header, so this reads the fetch body itself.
export async function watch(params, onLine, signal) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== '' && v !== undefined && v !== null && v !== false) q.set(k, String(v));
  const resp = await fetch(url('v1/watch?' + q.toString()), { headers: headers({}), signal });
  if (!resp.ok) {
    let body = null;
    try { body = await resp.json(); } catch { /* not JSON */ }
    throw new APIError(resp.status, body);
  }
  const reader = resp.body.getReader();
  const dec = new TextDecoder();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += dec.decode(value, { stream: true });
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl).trim();
      buf = buf.slice(nl + 1);
      if (line) onLine(JSON.parse(line));
    }
  }
}

// el builds a DOM element: el('a', {href: '#'}, 'text', child). Text is
// always text, never HTML, so event payloads cannot inject markup.
export function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(e.dataset, v);
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

// addrString is an address as the CLI writes it: type/id.
export function addrString(a) {
  return `${a.actor_type}/${a.entity_id}`;
}

// entityHash is the Entities page's link for an address.
export function entityHash(a) {
  const q = new URLSearchParams({ tenant: a.tenant || '', workspace: a.workspace || '', actor_type: a.actor_type, entity_id: a.entity_id });
  return '#/entities?' + q.toString();
}

export function sagaHash(correlation, workspace, tenant, focus) {
  const q = new URLSearchParams({ correlation_id: correlation, tenant: tenant || '', workspace: workspace || '' });
  if (focus) q.set('focus', focus);
  return '#/saga?' + q.toString();
}

export function pretty(v) {
  return JSON.stringify(v, null, 2);
}

export function when(ms) {
  return ms ? new Date(Number(ms)).toISOString().replace('T', ' ').replace('Z', '') : '';
}
