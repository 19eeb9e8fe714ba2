// Cluster: the members and the shard grid, refreshed every 2 s.
import { call, el } from './api.js';

const EVERY_MS = 2000;

export async function render(main, _params, ctx) {
  const updated = el('p', { class: 'muted', id: 'cluster-updated', role: 'status' }, 'Loading…');
  const summary = el('div', { id: 'cluster-summary' });
  const nodes = el('div', { id: 'nodes' });
  const shards = el('div', { id: 'shards' });
  const pause = el('button', { type: 'button', class: 'secondary', id: 'cluster-pause', 'aria-pressed': 'false' }, 'Pause updates');
  let paused = false;
  pause.addEventListener('click', () => {
    paused = !paused;
    pause.setAttribute('aria-pressed', String(paused));
    pause.textContent = paused ? 'Resume updates' : 'Pause updates';
  });
  main.append(el('h1', {}, 'Cluster'), el('div', { class: 'row' }, pause, updated), summary,
    el('h2', {}, 'Nodes'), nodes, el('h2', {}, 'Shards'), shards);

  const tick = async () => {
    if (ctx.signal.aborted) return;
    if (!paused) {
      try {
        const st = await call('GET', 'v1/cluster', undefined, ctx.signal);
        draw(st, summary, nodes, shards, ctx.me.role === 'admin');
        updated.textContent = `Updated ${new Date().toLocaleTimeString()} from node ${st.node_id}.`;
        ctx.flash('');
      } catch (e) {
        if (e.name === 'AbortError') return;
        updated.textContent = 'Update failed: ' + e.message;
      }
    }
    const t = setTimeout(tick, EVERY_MS);
    ctx.signal.addEventListener('abort', () => clearTimeout(t), { once: true });
  };
  await tick();
}

// indexes: the token is an admin's, so the replicas' applied indexes are
// real (a tenant's view carries zeros there).
function draw(st, summary, nodesDiv, shardsDiv, indexes) {
  const reasons = st.health_reasons || [];
  summary.replaceChildren(el('p', {},
    'Health of node ', el('strong', {}, st.node_id), ': ',
    el('span', { class: 'h-' + st.health, id: 'cluster-health' }, st.health || 'unknown'),
    reasons.length ? ' — ' + reasons.join('; ') : '',
    ` · ${st.shard_count} shards · version ${st.version}`,
    st.control_leader ? ` · control leader ${st.control_leader}` : '',
    st.cluster_id ? ` · cluster ${st.cluster_id}, map v${st.map_version}` : ''));

  const nrows = (st.nodes || []).map((n) => {
    const state = n.draining ? `${n.state}, draining` : n.state;
    return el('tr', { dataset: { node: n.node_id, state: n.state, draining: String(!!n.draining), version: n.version || '' } },
      el('th', { scope: 'row' }, n.node_id),
      el('td', { class: 'state-' + (n.draining && n.state === 'alive' ? 'draining' : n.state) }, state),
      el('td', {}, n.zone || '—'),
      el('td', {}, n.grpc_addr || ''),
      el('td', {}, n.version || (n.node_id === st.node_id ? st.version : '—')),
      el('td', {}, n.leading !== undefined ? `${n.leading} / ${n.replicas}` : ''),
      el('td', {}, n.control_voter ? 'yes' : ''));
  });
  nodesDiv.replaceChildren(el('table', { id: 'nodes-table' },
    el('caption', {}, `${nrows.length} nodes`),
    el('thead', {}, el('tr', {}, ['Node', 'State', 'Zone', 'gRPC', 'Version', 'Leading / replicas', 'Control voter'].map((h) => el('th', { scope: 'col' }, h)))),
    el('tbody', {}, nrows)));

  const byShard = new Map();
  for (const r of st.shards || []) {
    if (!byShard.has(r.shard)) byShard.set(r.shard, []);
    byShard.get(r.shard).push(r);
  }
  const health = new Map((st.shard_health || []).map((h) => [h.shard, h]));
  const moves = st.rebalancing || [];
  // A node the members call dead answers nothing: the status has no report
  // of its replicas, and any it had is not to be shown as alive.
  const memberState = new Map((st.nodes || []).map((n) => [n.node_id, n.state]));
  const gone = (node) => memberState.get(node) === 'dead';
  const rows = [];
  for (let s = 0; s < st.shard_count; s++) {
    const all = byShard.get(s) || [];
    const reps = all.filter((r) => !gone(r.node_id));
    const reported = (node) => reps.some((r) => r.node_id === node);
    // Voters without a report (the placement's list, admins only): the
    // replicas of dead nodes, or of nodes whose report did not arrive.
    const voters = all.reduce((v, r) => ((r.voters || []).length > v.length ? r.voters : v), []);
    const lost = voters.filter((v) => !reported(v));
    for (const r of all) if (gone(r.node_id) && !lost.includes(r.node_id)) lost.push(r.node_id);
    const lead = reps.find((r) => r.role === 'Leader');
    // The followers may still name a dead leader until they elect another
    // (or a suspect one that did not answer): no leader serves that shard.
    const named = lead ? lead.node_id : (reps.find((r) => r.leader) || {}).leader || '';
    const away = gone(named) || (memberState.get(named) === 'suspect' && !reported(named));
    const leader = named && (lead || !away) ? named : '';
    const term = Math.max(0, ...reps.map((r) => Number(r.term || 0)));
    // Lag: entries a replica has yet to apply that the furthest one applied.
    const top = Math.max(0, ...reps.map((r) => Number(r.applied_index || 0)));
    const h = health.get(s);
    const mv = moves.filter((m) => m.startsWith(`shard ${s}:`));
    rows.push(el('tr', { dataset: { shard: String(s), leader } },
      el('th', { scope: 'row' }, String(s)),
      el('td', {}, leader || el('span', { class: 'state-dead' }, named ? `${named} (unreachable)` : 'none')),
      el('td', {}, String(term)),
      el('td', {}, h ? el('span', { class: 'h-' + h.state, title: (h.reasons || []).join('; ') }, h.state) : '—',
        h && h.reasons && h.reasons.length ? el('div', { class: 'muted' }, h.reasons.join('; ')) : ''),
      el('td', {}, reps.map((r) => replica(r, top, indexes)), lost.map((n) => unreachable(n, memberState.get(n)))),
      el('td', {}, mv.length ? mv.join('; ') : '')));
  }
  shardsDiv.replaceChildren(el('table', { id: 'shards-table' },
    el('caption', {}, `${st.shard_count} shards, ${rows.filter((r) => r.dataset.leader).length} with a leader`),
    el('thead', {}, el('tr', {}, ['Shard', 'Leader', 'Term', 'Health', 'Replicas (node role applied lag)', 'Moves'].map((h) => el('th', { scope: 'col' }, h)))),
    el('tbody', {}, rows)));
}

function replica(r, top, indexes) {
  const parts = [r.node_id, ' ', el('span', { class: 'role-' + r.role }, r.role)];
  if (indexes) {
    const applied = Number(r.applied_index || 0);
    parts.push(` ${applied}`, top - applied > 0 ? ` (lag ${top - applied})` : '');
  }
  if ((r.voters || []).length && !(r.voters || []).includes(r.node_id)) parts.push(' learner');
  if (r.halted) parts.push(' ', el('span', { class: 'halted' }, 'halted: ' + r.halt_error));
  if (r.ingress && r.ingress !== 'running') parts.push(' ingress: ' + r.ingress);
  if (r.relay_backlog) parts.push(` relay backlog ${r.relay_backlog}`);
  return el('span', { class: 'replica', dataset: { node: r.node_id, role: r.role } }, parts);
}

// unreachable is the grid's entry for a replica on a node that does not
// answer: no role or index, which would be stale.
function unreachable(node, state) {
  const why = state === 'dead' || state === 'suspect' ? `unreachable (node ${state})` : 'unreachable (no report)';
  return el('span', { class: 'replica unreachable', dataset: { node, role: 'unreachable' }, title: `no report from ${node}` },
    node, ' ', el('span', { class: 'state-dead' }, why));
}
