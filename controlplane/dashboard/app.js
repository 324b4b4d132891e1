// qbridge's dashboard: polls the REST API (same origin, the browser's Basic auth) and draws
// four pages. Every value from the appliance reaches the page as text (el() below makes text
// nodes, never HTML), so a client id or topic cannot inject markup.
'use strict';

const POLL_MS = 2000;
const CLIENTS_PER_PAGE = 50;

const state = {
  page: 'overview',
  up: null,            // true / false once known
  downSince: null,     // Date the appliance stopped answering
  uptime: null,        // the last uptime seen, to notice a restart
  samples: [],         // history samples, oldest first
  lastSeq: 0,          // the last history sample's number
  refreshing: false,   // one poll at a time
  bridges: [],
  open: new Map(),     // which <details> the operator opened or closed
  metrics: null,
  confirming: null,    // {name, enable, until}: a switch waiting for its confirmation
  pointerDown: false,  // no redraw under a press (it would swallow the click)
  clientPage: 1,
  clientSearch: '',
  clientQuery: 0,      // the latest clients request: older answers are dropped
};

// --- small helpers -------------------------------------------------------------------------

// Children as nodes: anything that is not a node becomes a text node; null/undefined go.
function nodes(children) {
  return children.flat().filter((c) => c !== null && c !== undefined)
    .map((c) => (c instanceof Node ? c : document.createTextNode(String(c))));
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') e.className = v;
    else if (k === 'onclick') e.addEventListener('click', v);
    else e.setAttribute(k, v);
  }
  e.append(...nodes(children));
  return e;
}

function fill(node, ...children) {
  node.replaceChildren(...nodes(children));
}

function num(n, digits = 0) {
  if (n === undefined || n === null || Number.isNaN(n)) return '–';
  return Number(n).toLocaleString('en-US', { maximumFractionDigits: digits });
}

function duration(s) {
  if (s === undefined || s === null) return '–';
  s = Math.floor(s);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

function ms(v) {
  return v === undefined ? '–' : `${num(v, v < 10 ? 2 : 0)} ms`;
}

// The appliance is down when it does not answer or answers 5xx; any other failure is the
// request's own (a bridge a reload removed, ...), shown as a notice.
class Down extends Error {}

async function api(path, options) {
  let res;
  try {
    res = await fetch(path, { cache: 'no-store', ...options });
  } catch (e) {
    throw new Down(e.message);
  }
  if (res.status >= 500) throw new Down(`HTTP ${res.status}`);
  if (res.status === 401) throw new Error('not authorised (reload the page to log in again)');
  const body = await res.json().catch(() => ({}));
  if (!res.ok || body.code !== 0) throw new Error(body.message || `HTTP ${res.status}`);
  return body;
}

function failed(e) {
  if (e instanceof Down) setLink(false, e.message);
  else notice(e.message);
}

// --- the link to the appliance --------------------------------------------------------------

function setLink(up, detail) {
  const link = document.getElementById('link');
  if (up) {
    state.downSince = null;
    link.className = 'link up';
    link.textContent = `up ${duration(state.uptime)}`;
  } else {
    if (!state.downSince) state.downSince = new Date();
    link.className = 'link down';
    link.textContent = `unreachable since ${state.downSince.toLocaleTimeString()}, retrying`;
    link.title = detail || '';
  }
  state.up = up;
}

let noticeTimer = null;
function notice(text, seconds = 20) {
  const n = document.getElementById('notice');
  n.hidden = !text;
  n.textContent = text || '';
  clearTimeout(noticeTimer);
  if (text) noticeTimer = setTimeout(() => notice(''), seconds * 1000);
}

// --- overview ------------------------------------------------------------------------------

const charts = { total: null, bridges: null, bridgeNames: '' };

function chartWidth(id) {
  return Math.max(320, document.getElementById(id).clientWidth || 800);
}

function drawCharts() {
  const s = state.samples;
  const xs = s.map((x) => x.t / 1000);
  const totalData = [xs, s.map((x) => x.in), s.map((x) => x.out), s.map((x) => x.drops)];
  // Drops are messages not delivered: a bridge's (any reason) and full client queues.
  if (!charts.total) {
    charts.total = new uPlot({
      width: chartWidth('chart-total'), height: 220,
      series: [{}, { label: 'in', stroke: '#2a7ab0', width: 2 },
        { label: 'out', stroke: '#3a9a4a', width: 2 },
        { label: 'drops', stroke: '#c0392b', width: 1 }],
      axes: [{}, { size: 70 }],
    }, totalData, document.getElementById('chart-total'));
  } else {
    charts.total.setData(totalData);
  }
  const names = [...new Set(s.flatMap((x) => Object.keys(x.bridges)))].sort();
  const key = names.join('\u0000');
  const bridgeData = [xs];
  const series = [{}];
  const palette = ['#2a7ab0', '#3a9a4a', '#8e44ad', '#d35400', '#16a085', '#7f8c8d'];
  names.forEach((n, i) => {
    const color = palette[i % palette.length];
    bridgeData.push(s.map((x) => (x.bridges[n] ? x.bridges[n].tx : null)));
    bridgeData.push(s.map((x) => (x.bridges[n] ? x.bridges[n].rx : null)));
    series.push({ label: `${n} tx`, stroke: color, width: 2 });
    series.push({ label: `${n} rx`, stroke: color, width: 1, dash: [4, 4] });
  });
  if (charts.bridges && charts.bridgeNames !== key) {
    charts.bridges.destroy();
    charts.bridges = null;
  }
  if (!charts.bridges) {
    charts.bridgeNames = key;
    charts.bridges = new uPlot({ width: chartWidth('chart-bridges'), height: 220, series, axes: [{}, { size: 70 }] },
      bridgeData, document.getElementById('chart-bridges'));
  } else {
    charts.bridges.setData(bridgeData);
  }
}

function card(label, value, id) {
  return el('div', { class: 'card' }, el('div', { class: 'label' }, label), el('div', { class: 'value', id }, value));
}

function drawOverview() {
  const last = state.samples[state.samples.length - 1];
  const m = state.metrics;
  const connected = state.bridges.filter((b) => b.connected).length;
  fill(document.getElementById('cards'),
    card('Messages in /s', last ? num(last.in) : '–', 'rate-in'),
    card('Messages out /s', last ? num(last.out) : '–', 'rate-out'),
    card('Drops /s', last ? num(last.drops) : '–', 'rate-drops'),
    card('Sessions', m ? num(m.south.sessions) : '–', 'sessions'),
    card('Bridges connected', `${connected} / ${state.bridges.length}`, 'bridges-up'),
    card('Uptime', duration(state.uptime), 'uptime'));
  const rows = [];
  if (m) {
    // The workers' own drops (packets, streams, messages), summed over workers. route_failed
    // is left out: those messages are the bridges' drops listed below, by reason.
    const byReason = {};
    for (const [k, v] of Object.entries(m.workers)) {
      const name = k.replace(/\{.*$/, '');
      if (name.startsWith('drop_') && name !== 'drop_route_failed') byReason[name.slice(5)] = (byReason[name.slice(5)] || 0) + v;
    }
    for (const [reason, v] of Object.entries(byReason)) if (v > 0) rows.push(['workers', reason, v]);
  }
  for (const b of state.bridges) {
    const reasons = (b.traffic && b.traffic.drops_by_reason) || {};
    for (const [reason, v] of Object.entries(reasons)) if (v > 0) rows.push([`bridge ${b.name}`, reason, v]);
  }
  const tbody = document.querySelector('#drops tbody');
  if (rows.length === 0) fill(tbody, el('tr', {}, el('td', { colspan: 3, class: 'muted' }, 'No drops.')));
  else fill(tbody, rows.map(([w, r, v]) => el('tr', {}, el('td', {}, w), el('td', {}, r), el('td', { class: 'num' }, num(v)))));
  drawCharts();
}

// --- bridges -------------------------------------------------------------------------------

async function switchBridge(name, enable) {
  state.confirming = null;
  try {
    await api(`/api/v4/bridges/switch/${encodeURIComponent(name)}`, {
      method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ enable }),
    });
    notice(`Bridge ${name} ${enable ? 'enabled' : 'disabled'}.`);
  } catch (e) {
    notice(`Could not switch bridge ${name}: ${e.message}`);
  }
  drawBridges();
  // The controlplane takes the command with its next report (every 200 ms).
  setTimeout(refresh, 500);
}

function ask(name, enable) {
  state.confirming = { name, enable, until: Date.now() + 15000 };
  drawBridges();
}

// A <details> whose open state survives the redraw every poll makes.
function kept(key, openByDefault, summary, ...body) {
  const d = el('details', {}, el('summary', {}, summary), ...body);
  d.open = state.open.has(key) ? state.open.get(key) : openByDefault;
  d.addEventListener('toggle', () => state.open.set(key, d.open));
  return d;
}

function kv(rows) {
  return el('table', { class: 'kv' }, rows.map(([k, v, cls]) => el('tr', {}, el('th', {}, k), el('td', { class: cls || '' }, v))));
}

function silenceBar(b) {
  const h = b.keepalive_health || {};
  const keepalive = b.keepalive_effective ?? b.keepalive;
  const limit = keepalive * 1000;
  const longest = h.max_control_silence_ms || 0;
  const pct = limit > 0 ? Math.min(100, (100 * longest) / limit) : 0;
  // A PINGREQ goes out a little before the keepalive, so a healthy bridge sits near 95 %;
  // reaching the keepalive is the NanoMQ incident's first step.
  const bar = el('div', { class: `bar ${pct >= 100 ? 'bad' : ''}` });
  bar.style.width = `${pct}%`;
  return el('div', { class: 'silence' },
    el('div', { class: 'track' }, bar),
    `${ms(longest)} of ${keepalive}s keepalive (now ${ms(h.control_stream_idle_ms)})`);
}

function bridgeCard(b) {
  const h = b.keepalive_health || {};
  const t = b.traffic || {};
  const stateCls = b.connected ? 'ok' : b.enable ? 'bad' : 'off';
  let action;
  const c = state.confirming;
  if (c && c.name === b.name && Date.now() < c.until) {
    // What the operator asked for when clicking, whatever the bridge did since.
    action = el('span', { class: 'confirm' },
      `${c.enable ? 'Enable' : 'Disable'} bridge ${b.name}? `,
      el('button', { type: 'button', class: 'danger', 'data-action': 'confirm', onclick: () => switchBridge(b.name, c.enable) }, 'Confirm'),
      el('button', { type: 'button', 'data-action': 'cancel', onclick: () => { state.confirming = null; drawBridges(); } }, 'Cancel'));
  } else {
    action = el('button', { type: 'button', 'data-action': 'switch', onclick: () => ask(b.name, !b.enable) },
      b.enable ? 'Disable' : 'Enable');
  }
  const drops = Object.entries(t.drops_by_reason || {}).filter(([, v]) => v > 0).map(([k, v]) => `${k} ${num(v)}`).join(', ') || 'none';
  const left = kv([
    ['Server', b.server],
    ['Client id', b.clientid],
    ['Connected for', b.connected ? duration(b.connected_for_s) : '–'],
    ['Keepalive', b.keepalive_effective !== undefined && b.keepalive_effective !== b.keepalive
      ? `${b.keepalive_effective}s (the upstream's; ${b.keepalive}s configured)` : `${b.keepalive}s`],
    ['PINGREQ sent / PINGRESP', `${num(h.pingreqs_sent)} / ${num(h.pingresps)}`],
    ['PINGRESP RTT p50 / p99', `≤ ${ms(h.pingresp_rtt_p50_ms_at_most)} / ≤ ${ms(h.pingresp_rtt_p99_ms_at_most)} (last ${ms(h.pingresp_rtt_last_ms)})`],
    ['PINGRESP timeouts', num(h.pingresp_timeouts), h.pingresp_timeouts ? 'bad' : ''],
    ['Longest control-stream silence', silenceBar(b)],
  ]);
  const rightRows = [
    ['Reconnects', num(b.reconnects)],
    ['Sent / received', `${num(t.tx_messages)} / ${num(t.rx_messages)}`],
    ['In flight / queued', `${num(t.inflight)} / ${num(t.queued)}`],
    ['Resent (DUP)', num(t.resent)],
    ['Drops', drops],
  ];
  if (b.store) {
    rightRows.push(['Store backlog', `${num(b.store.messages)} messages, ${num(b.store.bytes)} B, oldest ${duration(b.store.oldest_age_ms / 1000)}`]);
  }
  const events = (b.events || []).slice().reverse();
  const detail = b.forwards ? b : null;
  const rules = detail ? kept(`${b.name}/rules`, false,
    `Forwards (${detail.forwards.length}) and subscriptions (${detail.subscription.length})`,
    el('table', { class: 'rules' },
      el('tr', {}, el('th', {}, 'Direction'), el('th', {}, 'Local topic'), el('th', {}, 'Remote topic'), el('th', {}, 'Prefix / suffix'), el('th', { class: 'num' }, 'QoS')),
      detail.forwards.map((f) => el('tr', {}, el('td', {}, 'to upstream'), el('td', { class: 'topic' }, f.local_topic),
        el('td', { class: 'topic' }, f.remote_topic || '(same)'), el('td', { class: 'topic' }, `${f.prefix} / ${f.suffix}`), el('td', { class: 'num' }, f.qos))),
      detail.subscription.map((f) => el('tr', {}, el('td', {}, 'from upstream'), el('td', { class: 'topic' }, f.local_topic || '(same)'),
        el('td', { class: 'topic' }, f.remote_topic), el('td', { class: 'topic' }, `${f.prefix} / ${f.suffix}`), el('td', { class: 'num' }, f.qos))))) : null;
  return el('div', { class: 'bridge', 'data-bridge': b.name },
    el('div', { class: 'bridge-head' },
      el('span', { class: 'name' }, b.name),
      el('span', { class: `state ${stateCls}`, 'data-state': b.state }, b.enable ? b.state : 'disabled'),
      action),
    el('div', { class: 'cols' }, left, kv(rightRows)),
    rules,
    kept(`${b.name}/events`, true, `Connection events (${events.length})`,
      events.length === 0 ? el('p', { class: 'muted' }, 'None yet.')
        : el('ul', { class: 'events' }, events.map((e) => el('li', {}, `${duration(e.ago_s)} ago: ${e.what}`)))));
}

function drawBridges() {
  if (state.pointerDown) return;  // the next poll draws it
  const list = document.getElementById('bridge-list');
  if (state.bridges.length === 0) fill(list, el('p', { class: 'muted' }, 'No bridges configured.'));
  else fill(list, state.bridges.map(bridgeCard));
}

// --- clients -------------------------------------------------------------------------------

async function loadClients() {
  const query = ++state.clientQuery;
  const q = new URLSearchParams({ _page: state.clientPage, _limit: CLIENTS_PER_PAGE });
  if (state.clientSearch) q.set('_like_clientid', state.clientSearch);
  const body = await api(`/api/v4/clients?${q}`);
  if (query !== state.clientQuery) return;  // a newer search or page was asked for meanwhile
  const pages = Math.max(1, Math.ceil(body.meta.count / CLIENTS_PER_PAGE));
  if (state.clientPage > pages) {
    state.clientPage = pages;
    return loadClients();
  }
  const proto = { 3: 'MQTT 3.1', 4: 'MQTT 3.1.1', 5: 'MQTT 5' };
  fill(document.querySelector('#clients tbody'), body.data.length === 0
    ? el('tr', {}, el('td', { colspan: 9, class: 'muted' }, 'No clients.'))
    : body.data.map((c) => el('tr', {},
      el('td', { class: 'client-id' }, c.client_id),
      el('td', {}, proto[c.proto_ver] || c.proto_ver),
      el('td', {}, c.transport.toUpperCase()),
      el('td', { class: 'num' }, `${c.keepalive}s`),
      el('td', { class: 'num' }, c.streams),
      el('td', { class: 'num' }, c.subscriptions),
      el('td', { class: 'num' }, num(c.pingreqs)),
      el('td', { class: 'num' }, c.worker),
      el('td', { class: 'num' }, duration(c.connected_for_s)))));
  const listed = body.meta.listed !== undefined ? ` (searching the first ${num(body.meta.listed)})` : '';
  document.getElementById('client-count').textContent =
    `${num(body.meta.count)} matching of ${num(body.meta.sessions)} connected${listed}`;
  document.getElementById('client-page').textContent = `page ${state.clientPage} of ${pages}`;
  document.getElementById('client-prev').disabled = state.clientPage <= 1;
  document.getElementById('client-next').disabled = state.clientPage >= pages;
}

// --- config --------------------------------------------------------------------------------

async function loadConfig() {
  const c = (await api('/api/v4/config')).data;
  // Set only what changed: a poll must not undo the operator's text selection.
  const set = (id, text) => {
    const e = document.getElementById(id);
    if (e.textContent !== text) e.textContent = text;
  };
  set('config-check', `--check-config: ${c.check}`);
  set('config-source', c.source);
  set('config-toml', c.toml);
  const notes = document.getElementById('config-notes');
  if (notes.childElementCount !== c.notes.length ||
      [...notes.children].some((li, i) => li.textContent !== `note: ${c.notes[i]}`)) {
    fill(notes, c.notes.map((n) => el('li', {}, `note: ${n}`)));
  }
}

// --- polling -------------------------------------------------------------------------------

async function refresh() {
  if (state.refreshing) return;  // the poll in flight answers for this one too
  state.refreshing = true;
  try {
    const detail = state.page === 'bridges' ? '?detail=true' : '';
    const [metrics, bridges] = (await Promise.all([api('/api/v4/metrics'), api(`/api/v4/bridges${detail}`)]))
      .map((b) => b.data);
    if (state.uptime !== null && metrics.uptime_s + 1 < state.uptime) {
      // A new process: its history starts again, and so do the charts.
      notice(`The appliance restarted ${duration(metrics.uptime_s)} ago.`, 60);
      state.samples = [];
      state.lastSeq = 0;
    } else if (state.up === false) {
      notice(`The appliance was unreachable from ${state.downSince.toLocaleTimeString()} to ${new Date().toLocaleTimeString()}.`, 60);
    }
    state.uptime = metrics.uptime_s;
    state.metrics = metrics;
    state.bridges = bridges;
    const h = (await api(`/api/v4/history?since=${state.lastSeq}`)).data;
    const fresh = h.samples.filter((x) => x.seq > state.lastSeq);
    if (fresh.length > 0) {
      state.samples.push(...fresh);
      state.lastSeq = fresh[fresh.length - 1].seq;
      const cut = fresh[fresh.length - 1].t - 15 * 60 * 1000;
      while (state.samples.length && state.samples[0].t <= cut) state.samples.shift();
    }
    setLink(true);
    if (state.page === 'overview') drawOverview();
    if (state.page === 'bridges') drawBridges();
    if (state.page === 'clients') await loadClients();
    if (state.page === 'config') await loadConfig();
  } catch (e) {
    failed(e);
  } finally {
    state.refreshing = false;
  }
}

function show(page) {
  if (!['overview', 'bridges', 'clients', 'config'].includes(page)) page = 'overview';
  state.page = page;
  state.confirming = null;
  for (const s of document.querySelectorAll('.page')) s.hidden = s.id !== `page-${page}`;
  for (const a of document.querySelectorAll('nav a')) a.classList.toggle('active', a.dataset.page === page);
  refresh();
}

function start() {
  window.addEventListener('hashchange', () => show(location.hash.slice(1)));
  const search = document.getElementById('client-search');
  search.addEventListener('input', () => {
    state.clientSearch = search.value.trim();
    state.clientPage = 1;
    loadClients().catch(failed);
  });
  document.getElementById('client-prev').addEventListener('click', () => {
    state.clientPage = Math.max(1, state.clientPage - 1);
    loadClients().catch(failed);
  });
  document.getElementById('client-next').addEventListener('click', () => {
    state.clientPage += 1;
    loadClients().catch(failed);
  });
  document.addEventListener('pointerdown', () => { state.pointerDown = true; });
  for (const ev of ['pointerup', 'pointercancel']) document.addEventListener(ev, () => { state.pointerDown = false; });
  window.addEventListener('resize', () => {
    for (const [c, id] of [[charts.total, 'chart-total'], [charts.bridges, 'chart-bridges']]) {
      if (c) c.setSize({ width: chartWidth(id), height: 220 });
    }
  });
  show(location.hash.slice(1));
  setInterval(refresh, POLL_MS);
}

start();
