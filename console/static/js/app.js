// The console's shell: the login, the hash router and the page lifecycle.
// Each page module exports render(main, params, ctx) and stops its timers
// and streams when ctx.signal aborts (the user went to another page).
import { call, token, el } from './api.js';
import * as cluster from './cluster.js';
import * as metrics from './metrics.js';
import * as entities from './entities.js';
import * as send from './send.js';
import * as deadletters from './deadletters.js';

const pages = {
  cluster, metrics, entities, send, saga: entities, 'dead-letters': deadletters,
};

const main = document.getElementById('main');
const flashEl = document.getElementById('flash');
let current = null;
let me = null;

export function flash(msg) {
  flashEl.textContent = msg || '';
  flashEl.hidden = !msg;
}

function parseHash() {
  const h = location.hash.replace(/^#\/?/, '');
  const [name, query] = h.split('?');
  return { name: name || 'cluster', params: new URLSearchParams(query || '') };
}

async function route() {
  if (current) current.abort();
  flash('');
  const { name, params } = parseHash();
  for (const a of document.querySelectorAll('nav a')) {
    if (a.dataset.page === (name === 'saga' ? 'entities' : name)) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  if (!me) return; // the login form is all there is until a token works
  const page = pages[name];
  current = new AbortController();
  main.replaceChildren();
  if (!page) {
    main.append(el('h1', { tabindex: '-1' }, 'Not found'), el('p', {}, `No page "${name}". `, el('a', { href: '#/cluster' }, 'Go to the cluster')));
  } else {
    try {
      await page.render(main, params, { signal: current.signal, me, name, flash });
    } catch (e) {
      if (e.name !== 'AbortError') flash(e.message);
    }
  }
  // Move focus to the new page's heading, so keyboard and screen-reader
  // users land on what changed rather than on the link they pressed.
  const h1 = main.querySelector('h1');
  if (h1 && document.activeElement && document.activeElement.closest('nav')) {
    h1.setAttribute('tabindex', '-1');
    h1.focus();
  }
}

function showSession() {
  const loggedIn = !!me;
  document.getElementById('login').hidden = loggedIn;
  document.getElementById('session').hidden = !loggedIn;
  document.getElementById('whoami').textContent = loggedIn
    ? `${me.principal.id} (${me.principal.type}, role ${me.role || 'system'}${me.default_tenant ? ', tenant ' + me.default_tenant : ''})`
    : '';
  document.body.dataset.role = loggedIn ? me.role : '';
}

async function login(t) {
  token.set(t);
  try {
    me = await call('GET', 'v1/whoami');
  } catch (e) {
    me = null;
    token.clear();
    flash(e.status === 401 ? 'That token was refused: ' + e.message : e.message);
    showSession();
    return;
  }
  showSession();
  await route();
  // The login form is gone: put focus on the page rather than nowhere.
  if (!document.activeElement || document.activeElement === document.body || document.activeElement.closest('#login')) {
    const h1 = main.querySelector('h1');
    if (h1) { h1.setAttribute('tabindex', '-1'); h1.focus(); }
  }
}

document.getElementById('login').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const input = document.getElementById('token');
  const t = input.value.trim();
  input.value = '';
  login(t);
});

document.getElementById('logout-btn').addEventListener('click', () => {
  token.clear();
  me = null;
  if (current) current.abort();
  showSession();
  main.replaceChildren(el('h1', {}, 'Logged out'), el('p', {}, 'The token was removed from this tab.'));
  document.getElementById('token').focus();
});

window.addEventListener('hashchange', route);

if (token.get()) login(token.get());
else showSession();
