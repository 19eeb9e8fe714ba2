// Dead letters: the list, inspection and redrive need the admin API for the
// dead-letter stream, which this node does not serve yet. The page says so
// rather than pretending.
import { el } from './api.js';

export async function render(main, _params, ctx) {
  main.append(el('h1', {}, 'Dead letters'));
  if (ctx.me.role !== 'admin') {
    main.append(el('p', { id: 'dead-letters-denied' }, 'Dead letters are for tokens with role admin: they hold every tenant\'s failed commands.'));
    return;
  }
  main.append(el('p', { id: 'dead-letters-unavailable' },
    'This node has no HTTP route for listing or redriving dead letters yet. They are kept on the RHIZON_DEAD stream (subject rhizon.dead.<shard>); ',
    'read them with a NATS client and the node credentials (rhizon nats-url).'));
}
