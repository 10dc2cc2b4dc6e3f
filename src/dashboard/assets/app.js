// streamgate dashboard: a thin page over the gateway's JSON API, which calls
// the gateway's own gRPC services. The bearer token (from `#token=T` or the
// login field) lives in this tab's sessionStorage and travels only in the
// Authorization header: never in a URL, never in a cookie.
'use strict';

const TOKEN_KEY = 'streamgate.token';
const $ = (sel) => document.querySelector(sel);
const $$ = (sel) => Array.from(document.querySelectorAll(sel));

let info = { auth: false, demo: null };
let live = null; // AbortController of the open live view
let skippedCount = 0; // entries the live view skipped because the page fell behind
let lastSnapshot = null;
const shownIds = new Set();

// ---- token -----------------------------------------------------------------

/** Takes a token from the URL fragment once, then removes it from the
 *  address bar so it is not bookmarked or shared by accident. */
function adoptFragmentToken() {
  const params = new URLSearchParams(location.hash.slice(1));
  const token = params.get('token');
  if (token) {
    sessionStorage.setItem(TOKEN_KEY, token);
    history.replaceState(null, '', location.pathname + location.search);
  }
}

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || '';
}

function headers(extra) {
  const h = Object.assign({}, extra || {});
  if (token()) h.Authorization = 'Bearer ' + token();
  return h;
}

// ---- small DOM helpers -----------------------------------------------------

/** Builds an element; children are nodes or text (never parsed as HTML). */
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else if (k === 'class') node.className = v;
    else node.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function fillBody(table, rows) {
  const body = table.querySelector('tbody');
  body.replaceChildren(...rows);
}

function ms(n) {
  if (n === null || n === undefined) return '–';
  if (n < 1000) return n + ' ms';
  if (n < 60000) return (n / 1000).toFixed(1) + ' s';
  return Math.floor(n / 60000) + ' min ' + Math.floor((n % 60000) / 1000) + ' s';
}

function time(tsMs) {
  return tsMs ? new Date(tsMs).toLocaleTimeString() : '';
}

function fieldsText(entry) {
  if (entry.omitted_bytes !== undefined) {
    return '(' + entry.omitted_bytes + ' bytes: too large to show here)';
  }
  const parts = Object.entries(entry.fields || {}).map(([k, v]) => k + '=' + v);
  for (const k of entry.binary_fields || []) parts.push(k + '=<binary>');
  return parts.join('  ');
}

// ---- status line -----------------------------------------------------------

function say(text, kind) {
  const s = $('#status');
  s.textContent = text;
  s.className = kind || '';
}

/** An error as the gateway reported it: gRPC status name and message. */
function sayError(err) {
  if (err && err.status) say(err.status + ': ' + err.message, 'error');
  else say(String(err && err.message ? err.message : err), 'error');
  if (err && err.status === 'UNAUTHENTICATED') showLogin(true);
}

// ---- API -------------------------------------------------------------------

async function api(method, path, body) {
  const res = await fetch(path, {
    method,
    headers: headers(body ? { 'Content-Type': 'application/json' } : {}),
    body: body ? JSON.stringify(body) : undefined,
  });
  const data = await res.json().catch(() => ({}));
  // Like gRPC, a refused call is an answer: the status is in the body.
  if (data.error) throw data.error;
  if (!res.ok) throw { status: 'UNKNOWN', message: res.status + ' ' + res.statusText };
  return data;
}

/** Reads the live view (SSE wire format) through fetch(), which can send
 *  the Authorization header; calls handlers[event](data). Resolves when
 *  the response ends; rejects with the gateway's error. */
async function readLive(url, signal, handlers) {
  const res = await fetch(url, { headers: headers(), signal });
  if (!res.ok) {
    const data = await res.json().catch(() => ({}));
    throw data.error || { status: 'UNKNOWN', message: res.statusText };
  }
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = 'message';
      let data = '';
      for (const line of block.split('\n')) {
        if (line.startsWith('event: ')) event = line.slice(7);
        else if (line.startsWith('data: ')) data += line.slice(6);
      }
      const handler = handlers[event];
      if (handler) handler(JSON.parse(data));
    }
  }
}

/** Answers that another try cannot change: the view stays closed until
 *  the person changes the token or the URL. */
const FINAL = ['UNAUTHENTICATED', 'PERMISSION_DENIED', 'INVALID_ARGUMENT'];

/** Keeps a live view open, reopening it a second after a dropped
 *  connection or a passing failure (Redis away: UNAVAILABLE); stops on a
 *  refusal. */
function startLive(url, handlers) {
  if (live) live.abort();
  const controller = new AbortController();
  live = controller;
  let refused = false;
  let failed = false; // a passing failure is on show until data flows again
  const all = {};
  for (const [name, handler] of Object.entries(handlers)) {
    all[name] = (data) => {
      if (failed) {
        failed = false;
        say('');
      }
      handler(data);
    };
  }
  Object.assign(all, {
    error: (e) => {
      failed = true;
      sayError(e.error);
      if (FINAL.includes(e.error.status)) {
        refused = true;
        if (handlers.refused) handlers.refused(e.error);
      }
    },
  });
  (async () => {
    while (!controller.signal.aborted && !refused) {
      try {
        await readLive(url, controller.signal, all);
      } catch (err) {
        if (controller.signal.aborted) return;
        if (err && err.status) {
          sayError(err);
          return;
        }
      }
      if (!refused) await new Promise((r) => setTimeout(r, 1000));
    }
  })();
}

// ---- login -----------------------------------------------------------------

function showLogin(needed) {
  const form = $('#login');
  form.hidden = !info.auth;
  $('#logout').hidden = !token();
  if (needed) $('#token').focus();
}

function setupLogin() {
  $('#login').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const value = $('#token').value.trim();
    if (!value) return;
    sessionStorage.setItem(TOKEN_KEY, value);
    $('#token').value = '';
    say('');
    route();
  });
  $('#logout').addEventListener('click', () => {
    sessionStorage.removeItem(TOKEN_KEY);
    route();
  });
}

// ---- stream list -----------------------------------------------------------

function showList() {
  $('#list-view').hidden = false;
  $('#stream-view').hidden = true;
  $('#crumbs').replaceChildren('Streams');
  fillBody($('#streams'), []);
  if (info.auth && !token()) {
    say('This gateway requires a token: enter it above or open the page with #token=…', 'error');
    showLogin(true);
    return;
  }
  startLive('/api/live', {
    streams: (view) => {
      say('');
      fillBody($('#streams'), view.streams.map((s) => el('tr', {},
        el('td', {}, el('a', { href: '/?stream=' + encodeURIComponent(s.name) }, s.name)),
        el('td', {}, s.length),
        el('td', { class: 'id' }, s.last_entry_id || '–'),
        el('td', {}, s.group_count))));
      $('#streams-empty').hidden = view.streams.length > 0;
    },
    refused: () => fillBody($('#streams'), []),
  });
}

// ---- one stream ------------------------------------------------------------

function clearStreamData() {
  lastSnapshot = null;
  skippedCount = 0;
  $('#tail-skipped').hidden = true;
  shownIds.clear();
  $('#summary').replaceChildren();
  $('#groups').replaceChildren();
  fillBody($('#entries'), []);
  fillBody($('#demo-consumers'), []);
  $('#demo-panel').hidden = true;
}

function showStream(name) {
  $('#list-view').hidden = true;
  $('#stream-view').hidden = false;
  $('#stream-name').textContent = name;
  $('#crumbs').replaceChildren(el('a', { href: '/?streams' }, 'Streams'), ' / ', name);
  document.title = name + ' · streamgate';
  if (info.demo) $('#reclaim-form [name=min_idle_ms]').value = info.demo.claim_min_idle_ms;
  clearStreamData();
  if (info.auth && !token()) {
    say('This gateway requires a token: enter it above or open the page with #token=…', 'error');
    showLogin(true);
    return;
  }
  startLive('/api/live?stream=' + encodeURIComponent(name), {
    snapshot: (snap) => renderSnapshot(snap),
    entries: (batch) => renderEntries(batch.entries, batch.initial),
    // The page fell behind and the gateway did not hold entries for it.
    skipped: (s) => {
      skippedCount += s.entries;
      $('#tail-skipped').hidden = false;
      $('#tail-skipped').textContent = skippedCount + ' entries were not shown: '
        + 'this page fell behind the stream';
    },
    'tail-error': (e) => {
      $('#tail-error').hidden = false;
      $('#tail-error').textContent = 'Tail: ' + e.error.status + ': ' + e.error.message;
    },
    refused: () => clearStreamData(),
  });
}

function fact(label, value) {
  return el('div', {}, el('dt', {}, label), el('dd', {}, value));
}

function renderSnapshot(snap) {
  lastSnapshot = snap;
  $('#tail-error').hidden = true;
  const dlq = snap.dead_letter;
  $('#summary').replaceChildren(
    fact('Length', snap.exists ? snap.length : 'no such stream yet'),
    fact('First ID', snap.first_entry_id || '–'),
    fact('Last ID', snap.last_entry_id || '–'),
    fact('Groups', snap.groups.length),
    fact('Dead letters (' + dlq.stream + ')',
      dlq.length === null ? (dlq.error ? dlq.error.status : '–') : dlq.length));
  renderPartitions(snap.partitions);
  renderGroups(snap.groups, snap.demo);
  renderDemo(snap.demo);
  updateSelects(snap.groups);
}

function renderPartitions(partitions) {
  $('#partitions-panel').hidden = partitions.length === 0;
  $('#partitions').replaceChildren(...partitions.map((p) => el('tr', { 'data-partition': p.partition },
    el('td', {}, String(p.partition)),
    el('td', { class: 'id' }, p.key),
    el('td', {}, String(p.length)),
    el('td', { class: 'id' }, p.last_entry_id || '–'))));
}

function renderGroups(groups, demo) {
  const demoByName = {};
  for (const c of (demo && demo.consumers) || []) demoByName[c.group + '/' + c.consumer] = c;
  $('#groups-empty').hidden = groups.length > 0;
  $('#groups').replaceChildren(...groups.map((g) => el('div', { class: 'group', 'data-group': g.name },
    el('h3', {}, g.name),
    el('div', { class: 'facts' },
      'consumers ', el('b', {}, g.consumer_count),
      ' · pending ', el('b', {}, g.pending),
      ' · lag ', el('b', {}, g.lag === null ? 'unknown' : g.lag),
      ' · last delivered ', el('b', {}, g.last_delivered_id)),
    ownersLine(g.owners),
    el('table', { class: 'consumers' },
      el('thead', {}, el('tr', {}, el('th', {}, 'Consumer'), el('th', {}, 'Pending'),
        el('th', {}, 'Idle'), el('th', {}, 'Inactive'), el('th', {}, 'Processed'),
        g.owners.length ? el('th', {}, 'Owns partitions') : null)),
      el('tbody', {}, g.consumers.map((c) => {
        const d = demoByName[g.name + '/' + c.name];
        const owns = ownedBy(g.owners, c.name);
        return el('tr', { 'data-consumer': c.name },
          el('td', {}, c.name), el('td', { class: 'pending' }, c.pending),
          el('td', {}, ms(c.idle_ms)), el('td', {}, ms(c.inactive_ms)),
          el('td', {}, d ? d.processed : '–'),
          g.owners.length ? el('td', { class: 'owns', 'data-owns': owns.join(',') },
            owns.length ? owns.join(', ') : '–') : null);
      }))),
    el('table', { class: 'pending-entries' },
      el('thead', {}, el('tr', {}, el('th', {}, 'Pending ID'), el('th', {}, 'Consumer'),
        el('th', {}, 'Idle'), el('th', {}, 'Delivery count'))),
      el('tbody', {}, g.pending_entries.length === 0
        ? el('tr', {}, el('td', { colspan: 4, class: 'hint' }, 'nothing pending'))
        : g.pending_entries.map((p) => el('tr', { 'data-id': p.id },
          el('td', { class: 'id' }, p.id), el('td', {}, p.consumer),
          el('td', {}, ms(p.idle_ms)), el('td', { class: 'count' }, p.delivery_count))))))));
}

// The partitions `consumer` owns (ordered consumption), from a group's
// `owners` (the owner of each partition, '' where none).
function ownedBy(owners, consumer) {
  return owners.flatMap((owner, p) => (owner === consumer ? [p] : []));
}

// Ordered consumption at a glance: how many partitions have an owner.
function ownersLine(owners) {
  if (!owners.length || owners.every((o) => !o)) return null;
  const unowned = ownedBy(owners, '');
  return el('div', { class: 'facts owners' },
    'ordered: ', el('b', {}, owners.length - unowned.length), ' of ', el('b', {}, owners.length),
    ' partitions owned',
    unowned.length ? ' · unowned: ' + unowned.join(', ') : '');
}

function renderDemo(demo) {
  if (!demo) {
    $('#demo-panel').hidden = true;
    return;
  }
  $('#demo-panel').hidden = false;
  fillBody($('#demo-consumers'), demo.consumers.map((c) => el('tr', { 'data-consumer': c.consumer },
    el('td', {}, c.consumer), el('td', {}, c.group),
    el('td', { class: 'processed' }, c.processed),
    el('td', {}, c.dropped + (c.crash_left ? ' (' + c.crash_left + ' to go)' : '')),
    el('td', { class: 'recent' }, c.recent.map((r) => el('span', {
      class: 'pill' + (r.outcome === 'dropped' ? ' dropped' : r.delivery_count > 1 ? ' redelivered' : ''),
      title: r.type + ', delivery ' + r.delivery_count,
      'data-id': r.id, 'data-count': r.delivery_count, 'data-outcome': r.outcome,
    }, r.id + ' ×' + r.delivery_count + (r.outcome === 'dropped' ? ' dropped' : ''))),
      c.error ? el('span', { class: 'error' }, ' ' + c.error) : null),
    el('td', {}, el('button', {
      type: 'button', class: 'crash',
      onclick: () => act('/api/demo/crash', { group: c.group, consumer: c.consumer }),
    }, 'Crash next 3')))));
}

function renderEntries(entries, initial) {
  const body = $('#entries tbody');
  for (const e of entries) {
    if (shownIds.has(e.id)) continue;
    shownIds.add(e.id);
    const row = el('tr', { class: initial ? '' : 'fresh', 'data-id': e.id },
      el('td', { class: 'id' }, e.id), el('td', {}, e.type),
      el('td', { class: 'mono' }, fieldsText(e)), el('td', {}, time(e.ts_ms)));
    body.prepend(row);
  }
  while (body.rows.length > 50) {
    shownIds.delete(body.lastElementChild.dataset.id);
    body.lastElementChild.remove();
  }
}

/** Refreshes group and consumer choices, keeping what the person chose. */
function updateSelects(groups) {
  $('#group-names').replaceChildren(...groups.map((g) => el('option', { value: g.name })));
  const addGroup = $('#add-form [name=group]');
  if (!addGroup.value && groups.length > 0 && document.activeElement !== addGroup) {
    addGroup.value = groups[0].name;
  }
  for (const form of ['#remove-form', '#reclaim-form']) {
    const groupSelect = $(form + ' .group-select');
    setOptions(groupSelect, groups.map((g) => g.name));
    const group = groups.find((g) => g.name === groupSelect.value);
    const names = group ? group.consumers.map((c) => c.name) : [];
    if (lastSnapshot && lastSnapshot.demo) {
      for (const c of lastSnapshot.demo.consumers) {
        if (group && c.group === group.name && !names.includes(c.consumer)) names.push(c.consumer);
      }
    }
    for (const select of $$(form + ' .consumer-select')) setOptions(select, names, select.dataset.none);
  }
}

function setOptions(select, values, none) {
  const keep = select.value;
  const options = [];
  if (none !== undefined) options.push(el('option', { value: '' }, none));
  for (const v of values) options.push(el('option', { value: v }, v));
  const same = select.options.length === options.length &&
    options.every((o, i) => select.options[i].value === o.value);
  if (!same) select.replaceChildren(...options);
  if ([...select.options].some((o) => o.value === keep)) select.value = keep;
}

// ---- actions ---------------------------------------------------------------

async function act(path, body) {
  try {
    const result = await api('POST', path, body);
    say(result.message, 'ok');
    return result;
  } catch (err) {
    sayError(err);
    return null;
  }
}

function formData(form) {
  return Object.fromEntries(new FormData(form).entries());
}

function setupActions() {
  const stream = () => new URLSearchParams(location.search).get('stream');
  const on = (id, handler) => $(id).addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const button = ev.target.querySelector('button[type=submit]');
    button.disabled = true;
    try {
      await handler(formData(ev.target));
    } finally {
      button.disabled = false;
    }
  });
  on('#produce-form', (f) => act('/api/produce',
    { stream: stream(), count: Number(f.count || 1), type: f.type }));
  on('#replay-form', async (f) => {
    const result = await act('/api/replay',
      { stream: stream(), start: f.start, end: f.end, limit: Number(f.limit || 20) });
    if (!result) return;
    $('#replay-panel').hidden = false;
    fillBody($('#replay'), result.entries.map((e) => el('tr', {},
      el('td', { class: 'id' }, e.id), el('td', {}, e.type),
      el('td', { class: 'mono' }, fieldsText(e)), el('td', {}, time(e.ts_ms)))));
  });
  on('#trim-form', (f) => act('/api/trim',
    { stream: stream(), max_len: Number(f.max_len), mode: f.mode }));
  on('#add-form', (f) => act('/api/add-consumer',
    { stream: stream(), group: f.group, consumer: f.consumer }));
  on('#remove-form', (f) => act('/api/remove-consumer',
    { stream: stream(), group: f.group, consumer: f.consumer, handover_to: f.handover_to }));
  on('#reclaim-form', (f) => act('/api/reclaim',
    { stream: stream(), group: f.group, consumer: f.consumer, min_idle_ms: Number(f.min_idle_ms) }));
  for (const form of ['#remove-form', '#reclaim-form']) {
    $(form + ' .group-select').addEventListener('change',
      () => lastSnapshot && updateSelects(lastSnapshot.groups));
  }
  $('#reset-demo').addEventListener('click', async () => {
    if (await act('/api/demo/reset', {})) {
      fillBody($('#entries'), []);
      shownIds.clear();
    }
  });
  $('#open-stream').addEventListener('submit', (ev) => {
    ev.preventDefault();
    location.href = '/?stream=' + encodeURIComponent(formData(ev.target).stream);
  });
}

// ---- start -----------------------------------------------------------------

function route() {
  showLogin(false);
  // The demo opens on its stream, as the seed's page did.
  if (info.demo && !location.search) {
    history.replaceState(null, '', '/?stream=' + encodeURIComponent(info.demo.stream));
  }
  const stream = new URLSearchParams(location.search).get('stream');
  if (stream) showStream(stream);
  else showList();
}

async function main() {
  adoptFragmentToken();
  setupLogin();
  setupActions();
  try {
    info = await api('GET', '/api/info');
  } catch (err) {
    sayError(err);
  }
  route();
}

main();
