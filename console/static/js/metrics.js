// Metrics: small live charts computed in the browser from the node's own
// /metrics (the Prometheus text format), sampled every 2 s. No Prometheus.
import { metricsText, el } from './api.js';

const EVERY_MS = 2000;
const POINTS = 90; // three minutes
const SVG = 'http://www.w3.org/2000/svg';

// parse sums every series of each metric name, and sums histogram buckets by
// their "le" bound: the charts are for the whole node.
export function parse(text) {
  const sums = new Map();
  const buckets = new Map(); // name -> Map(le -> count)
  for (const line of text.split('\n')) {
    if (!line || line[0] === '#') continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const v = Number(m[3]);
    if (!Number.isFinite(v)) continue;
    if (m[1].endsWith('_bucket')) {
      const le = /le="([^"]*)"/.exec(m[2] || '');
      if (!le) continue;
      const name = m[1].slice(0, -'_bucket'.length);
      if (!buckets.has(name)) buckets.set(name, new Map());
      const b = buckets.get(name);
      b.set(le[1], (b.get(le[1]) || 0) + v);
      continue;
    }
    sums.set(m[1], (sums.get(m[1]) || 0) + v);
  }
  return { sums, buckets };
}

// quantile estimates q from the bucket counts added between two samples,
// interpolating inside the bucket as Prometheus' histogram_quantile does.
export function quantile(q, prev, cur) {
  if (!cur) return null;
  const les = [...cur.keys()].map((k) => [k, k === '+Inf' ? Infinity : Number(k)]).sort((a, b) => a[1] - b[1]);
  const counts = les.map(([k, le]) => [le, (cur.get(k) || 0) - ((prev && prev.get(k)) || 0)]);
  const total = counts.length ? counts[counts.length - 1][1] : 0;
  if (total <= 0) return null;
  const rank = q * total;
  let lower = 0, below = 0;
  for (const [le, c] of counts) {
    if (c >= rank) {
      if (le === Infinity) return lower;
      return lower + (le - lower) * ((rank - below) / Math.max(c - below, 1e-9));
    }
    lower = le; below = c;
  }
  return lower;
}

const charts = [
  { id: 'commands', title: 'Commands/s', unit: '/s', f: (p, c, dt) => rate(p, c, dt, 'rhizon_commands_total') },
  { id: 'latency', title: 'Submit latency p50 / p99', unit: ' ms',
    f: (p, c) => ms(quantile(0.5, p && p.buckets.get('rhizon_submit_duration_seconds'), c.buckets.get('rhizon_submit_duration_seconds'))),
    g: (p, c) => ms(quantile(0.99, p && p.buckets.get('rhizon_submit_duration_seconds'), c.buckets.get('rhizon_submit_duration_seconds'))) },
  { id: 'raft', title: 'Raft entries applied/s', unit: '/s', f: (p, c, dt) => rate(p, c, dt, 'rhizon_entries_applied_total') },
  { id: 'ingress-lag', title: 'Ingress lag (messages)', unit: '', f: (_p, c) => c.sums.get('rhizon_ingress_consumer_lag') ?? null },
  { id: 'relay-backlog', title: 'Relay backlog (rows)', unit: '', f: (_p, c) => c.sums.get('rhizon_outbox_backlog') ?? null },
];

function rate(p, c, dt, name) {
  if (!p || dt <= 0) return null;
  const d = (c.sums.get(name) || 0) - (p.sums.get(name) || 0);
  return d < 0 ? null : d / dt; // a restart resets counters
}

function ms(s) {
  return s === null ? null : s * 1000;
}

export async function render(main, _params, ctx) {
  const status = el('p', { class: 'muted', role: 'status', id: 'metrics-updated' }, 'Sampling…');
  const grid = el('div', { class: 'charts' });
  const series = new Map();
  for (const c of charts) {
    const value = el('span', { class: 'value', id: 'metric-' + c.id }, '—');
    const svg = document.createElementNS(SVG, 'svg');
    svg.setAttribute('class', 'chart');
    svg.setAttribute('viewBox', `0 0 ${POINTS} 40`);
    svg.setAttribute('preserveAspectRatio', 'none');
    svg.setAttribute('role', 'img');
    svg.setAttribute('aria-label', c.title + ' over the last three minutes');
    series.set(c.id, { a: [], b: [], value, svg });
    grid.append(el('figure', {}, el('figcaption', {}, c.title), value, svg));
  }
  main.append(el('h1', {}, 'Metrics'),
    el('p', {}, 'From this node\'s ', el('a', { href: '../metrics' }, '/metrics'), ', sampled every 2 s; rates are over the last interval.'),
    status, grid);

  let prev = null, prevT = 0;
  const tick = async () => {
    if (ctx.signal.aborted) return;
    try {
      const cur = parse(await metricsText(ctx.signal));
      const now = performance.now();
      const dt = (now - prevT) / 1000;
      for (const c of charts) {
        const s = series.get(c.id);
        const a = c.f(prev, cur, dt);
        const b = c.g ? c.g(prev, cur, dt) : undefined;
        s.a.push(a); if (s.a.length > POINTS) s.a.shift();
        if (c.g) { s.b.push(b); if (s.b.length > POINTS) s.b.shift(); }
        s.value.textContent = c.g ? `${fmt(a)} / ${fmt(b)}${c.unit}` : `${fmt(a)}${c.unit}`;
        draw(s);
      }
      prev = cur; prevT = now;
      status.textContent = `Sampled ${new Date().toLocaleTimeString()}.`;
    } catch (e) {
      if (e.name === 'AbortError') return;
      status.textContent = 'Sampling failed: ' + e.message;
    }
    const t = setTimeout(tick, EVERY_MS);
    ctx.signal.addEventListener('abort', () => clearTimeout(t), { once: true });
  };
  await tick();
}

function fmt(v) {
  if (v === null || v === undefined) return '—';
  if (Number.isInteger(v)) return String(v);
  return v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2);
}

function draw(s) {
  const max = Math.max(1e-9, ...s.a.filter((v) => v !== null), ...s.b.filter((v) => v !== null));
  s.svg.replaceChildren();
  for (const [data, cls] of [[s.a, ''], [s.b, 'second']]) {
    if (!data.length) continue;
    const off = POINTS - data.length;
    const pts = data.map((v, i) => `${off + i},${(40 - ((v || 0) / max) * 38).toFixed(2)}`).join(' ');
    const line = document.createElementNS(SVG, 'polyline');
    line.setAttribute('points', pts);
    if (cls) line.setAttribute('class', cls);
    s.svg.append(line);
  }
}
