/**
 * The status page: one self-contained HTML document (inline CSS and script, no external asset, so
 * it works offline and under a strict Content-Security-Policy). It is rendered from the snapshot
 * embedded in it, then kept live by `/events` (Server-Sent Events: every state change is pushed
 * as it happens, the rest every second), falling back to polling `/status.json` where
 * EventSource is missing. Every piece of data goes in through textContent, never as markup, so a
 * file name cannot inject anything. Rows carry data-rank / data-state (data-health for files) so
 * that tests and scripts can read the page without parsing its text.
 */
import { snapshotJson, type StatusSnapshot } from './snapshot.js';

const STYLE = `
:root { color-scheme: light; --ok: #1a7f37; --warn: #b76e00; --bad: #c62828; --muted: #6b7280;
  --line: #e5e7eb; --bg: #f8fafc; font-family: system-ui, -apple-system, "Segoe UI", sans-serif; }
body { margin: 0; background: var(--bg); color: #111827; }
header { display: flex; align-items: baseline; gap: 1rem; padding: 1rem 1.5rem; background: #0f172a; color: #f8fafc; }
header h1 { font-size: 1.25rem; margin: 0; }
header .sub { color: #cbd5e1; font-size: .85rem; }
#live { margin-left: auto; font-size: .85rem; padding: .15rem .6rem; border-radius: 999px; background: #334155; }
#live[data-live="live"] { background: var(--ok); }
#live[data-live="reconnecting"], #live[data-live="stale"] { background: var(--warn); }
main { padding: 1rem 1.5rem 2rem; }
h2 { font-size: 1rem; margin: 1.5rem 0 .5rem; }
h2 small { color: var(--muted); font-weight: normal; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(11rem, 1fr)); gap: .75rem; }
.card { background: #fff; border: 1px solid var(--line); border-radius: .5rem; padding: .6rem .8rem; }
.card .label { color: var(--muted); font-size: .75rem; text-transform: uppercase; letter-spacing: .03em; }
.card .value { font-size: 1.35rem; font-variant-numeric: tabular-nums; margin-top: .2rem; }
.card[data-alert="true"] { border-color: var(--warn); background: #fff7e6; }
table { border-collapse: collapse; width: 100%; background: #fff; border: 1px solid var(--line); }
th, td { text-align: left; padding: .4rem .6rem; border-bottom: 1px solid var(--line); font-size: .9rem; white-space: nowrap; }
th { background: #f1f5f9; font-weight: 600; font-size: .8rem; color: #334155; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.name { white-space: normal; word-break: break-all; }
tfoot td { font-weight: 600; background: #f8fafc; }
tr[data-state="dead"] td { color: var(--muted); }
.badge { display: inline-block; min-width: 4.5em; text-align: center; padding: .1rem .5rem; border-radius: 999px;
  font-size: .78rem; font-weight: 600; color: #fff; }
.badge[data-state="alive"], .badge[data-health="healthy"] { background: var(--ok); }
.badge[data-state="suspect"], .badge[data-health="under-replicated"] { background: var(--warn); }
.badge[data-state="dead"], .badge[data-health="unavailable"] { background: var(--bad); }
.bar { position: relative; width: 10rem; height: .8rem; background: #e2e8f0; border-radius: .4rem; overflow: hidden; display: inline-block; vertical-align: middle; }
.bar > span { position: absolute; inset: 0 auto 0 0; background: #2563eb; }
.bar[data-level="high"] > span { background: var(--warn); }
.bar[data-level="full"] > span { background: var(--bad); }
.pct { display: inline-block; width: 3.5em; text-align: right; font-size: .8rem; color: var(--muted); }
#transitions { list-style: none; margin: 0; padding: 0; background: #fff; border: 1px solid var(--line); max-height: 16rem; overflow: auto; }
#transitions li { padding: .3rem .6rem; border-bottom: 1px solid var(--line); font-size: .85rem; }
#transitions time { color: var(--muted); font-variant-numeric: tabular-nums; margin-right: .6rem; }
#transitions .reason { color: var(--muted); }
.empty { color: var(--muted); padding: .5rem .6rem; font-size: .85rem; }
`;

// Plain ES5-style script (no template literals: this file is itself one).
const SCRIPT = `
(function () {
  'use strict';
  var UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  function size(n) {
    if (n === null || n === undefined) return 'no limit';
    var i = 0;
    while (n >= 1024 && i < UNITS.length - 1) { n /= 1024; i++; }
    return (i === 0 ? String(n) : n.toFixed(n < 10 ? 2 : 1)) + ' ' + UNITS[i];
  }
  function duration(ms) {
    if (ms === null || ms === undefined) return 'never';
    if (ms < 1000) return Math.round(ms) + ' ms';
    var s = ms / 1000;
    if (s < 120) return s.toFixed(1) + ' s';
    var m = Math.floor(s / 60);
    if (m < 120) return m + ' min';
    var h = Math.floor(m / 60);
    return h < 48 ? h + ' h ' + (m % 60) + ' min' : Math.floor(h / 24) + ' d ' + (h % 24) + ' h';
  }
  function clock(iso) {
    var d = new Date(iso);
    function two(x) { return (x < 10 ? '0' : '') + x; }
    var ms = d.getMilliseconds();
    return two(d.getHours()) + ':' + two(d.getMinutes()) + ':' + two(d.getSeconds()) + '.' + (ms < 100 ? (ms < 10 ? '00' : '0') : '') + ms;
  }
  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    if (attrs) for (var k in attrs) if (Object.prototype.hasOwnProperty.call(attrs, k)) e.setAttribute(k, String(attrs[k]));
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function cell(text, cls) { return el('td', cls ? { 'class': cls } : null, text); }
  function bar(used, capacity) {
    var td = el('td');
    var frac = capacity === null || capacity <= 0 ? 0 : Math.min(1, used / capacity);
    var b = el('span', { 'class': 'bar', 'data-level': frac >= 0.95 ? 'full' : frac >= 0.8 ? 'high' : 'ok',
      role: 'meter', 'aria-valuemin': 0, 'aria-valuemax': 100, 'aria-valuenow': Math.round(frac * 100) });
    var fill = el('span');
    fill.style.width = (frac * 100).toFixed(2) + '%';
    b.appendChild(fill);
    td.appendChild(b);
    td.appendChild(el('span', { 'class': 'pct' }, capacity === null ? '' : (frac * 100).toFixed(1) + '%'));
    return td;
  }
  function setText(id, text) { document.getElementById(id).textContent = text; }
  function replaceChildren(node, children) {
    while (node.firstChild) node.removeChild(node.firstChild);
    for (var i = 0; i < children.length; i++) node.appendChild(children[i]);
  }

  function render(snap) {
    var st = snap.status;
    var counts = { alive: 0, suspect: 0, dead: 0 };
    var total = { used: 0, capacity: 0, unlimited: false, copies: 0, primary: 0, replica: 0 };
    var rows = st.ranks.map(function (r) {
      counts[r.state] = (counts[r.state] || 0) + 1;
      if (r.state !== 'dead') {
        total.used += r.usedBytes;
        if (r.capacityBytes === null) total.unlimited = true; else total.capacity += r.capacityBytes;
      }
      total.copies += r.chunkCopies; total.primary += r.primaryCopies; total.replica += r.replicaCopies;
      var tr = el('tr', { 'data-rank': r.rank, 'data-state': r.state });
      tr.appendChild(cell(r.rank, 'num'));
      tr.appendChild(cell(r.host));
      var st2 = el('td');
      st2.appendChild(el('span', { 'class': 'badge', 'data-state': r.state }, r.state));
      tr.appendChild(st2);
      tr.appendChild(cell(duration(r.heartbeatAgeMs) + (r.heartbeatAgeMs === null ? '' : ' ago'), 'num'));
      tr.appendChild(bar(r.usedBytes, r.capacityBytes));
      tr.appendChild(cell(size(r.usedBytes), 'num'));
      tr.appendChild(cell(size(r.capacityBytes), 'num'));
      tr.appendChild(cell(r.capacityBytes === null ? 'no limit' : size(Math.max(0, r.capacityBytes - r.usedBytes)), 'num'));
      tr.appendChild(cell(r.chunkCopies, 'num'));
      tr.appendChild(cell(r.primaryCopies, 'num'));
      tr.appendChild(cell(r.replicaCopies, 'num'));
      return tr;
    });
    var ranksTable = document.getElementById('ranks');
    replaceChildren(ranksTable.tBodies[0], rows.length ? rows : [(function () {
      var tr = el('tr'); var td = el('td', { colspan: 11, 'class': 'empty' }, 'no data ranks yet'); tr.appendChild(td); return tr;
    })()]);
    var cap = total.unlimited ? null : total.capacity;
    var foot = el('tr', { id: 'totals' });
    foot.appendChild(el('td', { colspan: 4 }, 'Total of ranks not dead'));
    foot.appendChild(bar(total.used, cap));
    foot.appendChild(cell(size(total.used), 'num'));
    foot.appendChild(cell(size(cap), 'num'));
    foot.appendChild(cell(cap === null ? 'no limit' : size(Math.max(0, cap - total.used)), 'num'));
    foot.appendChild(cell(total.copies, 'num'));
    foot.appendChild(cell(total.primary, 'num'));
    foot.appendChild(cell(total.replica, 'num'));
    replaceChildren(ranksTable.tFoot, [foot]);

    setText('rank-summary', counts.alive + ' alive' + (counts.suspect ? ', ' + counts.suspect + ' suspect' : '') + (counts.dead ? ', ' + counts.dead + ' dead' : ''));
    setText('total-used', size(total.used) + (cap === null ? '' : ' of ' + size(cap)));
    setText('file-count', String(st.files));
    setText('chunk-count', String(st.chunks));
    setText('under-replicated', String(st.underReplicatedChunks));
    document.getElementById('under-card').setAttribute('data-alert', String(st.underReplicatedChunks > 0));
    setText('copies', st.replicas + ' × ' + size(st.chunkSizeBytes));
    setText('uptime', duration(st.uptimeMs));
    setText('updated', 'as of ' + clock(snap.generatedAt));

    var items = snap.transitions.slice(0, 30).map(function (t) {
      var li = el('li', { 'data-rank': t.rank, 'data-from': t.from, 'data-to': t.to });
      li.appendChild(el('time', { datetime: t.at }, clock(t.at)));
      li.appendChild(document.createTextNode('rank ' + t.rank + ': ' + t.from + ' \\u2192 '));
      li.appendChild(el('span', { 'class': 'badge', 'data-state': t.to }, t.to));
      li.appendChild(el('span', { 'class': 'reason' }, ' (' + t.reason + ')'));
      return li;
    });
    replaceChildren(document.getElementById('transitions'), items.length ? items : [el('li', { 'class': 'empty' }, 'none since rank 0 started')]);

    var files = snap.files.shown.map(function (f) {
      var tr = el('tr', { 'data-file': f.name, 'data-health': f.health });
      tr.appendChild(cell(f.name, 'name'));
      tr.appendChild(cell(size(f.sizeBytes), 'num'));
      tr.appendChild(cell(f.chunks, 'num'));
      var h = el('td');
      h.appendChild(el('span', { 'class': 'badge', 'data-health': f.health }, f.health));
      tr.appendChild(h);
      tr.appendChild(cell(f.modified.replace('T', ' ').replace(/\\.\\d+Z$/, 'Z')));
      return tr;
    });
    replaceChildren(document.getElementById('files').tBodies[0], files.length ? files : [(function () {
      var tr = el('tr'); tr.appendChild(el('td', { colspan: 5, 'class': 'empty' }, 'no files')); return tr;
    })()]);
    setText('files-note', snap.files.total > snap.files.shown.length
      ? '(first ' + snap.files.shown.length + ' of ' + snap.files.total + ')'
      : '(' + snap.files.total + ')');
  }

  var lastAt = Date.now();
  function apply(snap) { lastAt = Date.now(); render(snap); }
  function live(state, text) {
    var e = document.getElementById('live');
    e.setAttribute('data-live', state);
    e.textContent = text;
  }
  apply(JSON.parse(document.getElementById('initial-data').textContent));

  function poll() {
    fetch('status.json', { cache: 'no-store' })
      .then(function (r) { if (!r.ok) throw new Error('HTTP ' + r.status); return r.json(); })
      .then(function (s) { apply(s); live('live', 'live (polling)'); })
      .catch(function () { live('reconnecting', 'cannot reach rank 0'); })
      .then(function () { setTimeout(poll, 1000); });
  }
  if (typeof EventSource === 'function') {
    var events = new EventSource('events');
    events.addEventListener('status', function (e) { apply(JSON.parse(e.data)); live('live', 'live'); });
    events.onerror = function () { live('reconnecting', 'reconnecting\\u2026'); };
  } else {
    poll();
  }
  // Updates come every second: a silence of several means rank 0 is gone or the link is down.
  setInterval(function () {
    if (Date.now() - lastAt > 5000) live('stale', 'no update for ' + duration(Date.now() - lastAt));
  }, 1000);
})();
`;

export function renderPage(snapshot: StatusSnapshot): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>MemFlow status</title>
<link rel="icon" href="data:,">
<style>${STYLE}</style>
</head>
<body>
<header><h1>MemFlow</h1><span class="sub">store status</span><span class="sub" id="updated"></span><span id="live" data-live="connecting">connecting…</span></header>
<main>
<section class="cards">
  <div class="card"><div class="label">Data ranks</div><div class="value" id="rank-summary"></div></div>
  <div class="card"><div class="label">Used (ranks not dead)</div><div class="value" id="total-used"></div></div>
  <div class="card"><div class="label">Files</div><div class="value" id="file-count"></div></div>
  <div class="card"><div class="label">Chunks</div><div class="value" id="chunk-count"></div></div>
  <div class="card" id="under-card"><div class="label">Under-replicated chunks</div><div class="value" id="under-replicated"></div></div>
  <div class="card"><div class="label">Copies × chunk size</div><div class="value" id="copies"></div></div>
  <div class="card"><div class="label">Uptime</div><div class="value" id="uptime"></div></div>
</section>
<h2>Data ranks</h2>
<table id="ranks">
<thead><tr><th class="num">Rank</th><th>Host</th><th>State</th><th class="num">Heartbeat</th><th>Usage</th><th class="num">Used</th><th class="num">Capacity</th><th class="num">Free</th><th class="num">Copies</th><th class="num">Primary</th><th class="num">Replica</th></tr></thead>
<tbody></tbody>
<tfoot></tfoot>
</table>
<h2>Recent state changes <small>(newest first)</small></h2>
<ol id="transitions"></ol>
<h2>Files <small id="files-note"></small></h2>
<table id="files">
<thead><tr><th>Name</th><th class="num">Size</th><th class="num">Chunks</th><th>Health</th><th>Modified (UTC)</th></tr></thead>
<tbody></tbody>
</table>
</main>
<script id="initial-data" type="application/json">${snapshotJson(snapshot)}</script>
<script>${SCRIPT}</script>
</body>
</html>
`;
}

/** Inline style and script only (and an empty data: icon, so no browser asks for /favicon.ico); fetches and the event stream only back to this server. */
export const PAGE_CSP =
  "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
