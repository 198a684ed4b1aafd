// edgecd console: renders each page from the JSON API (/api/v1/...) and polls it every few
// seconds. Hand-written, no framework, no build step. Every change goes through the API with
// the session cookie and the page's CSRF token (X-CSRF-Token); the server decides who may do
// what, buttons a role could not use are not shown.
'use strict';
(function () {
  const POLL_MS = 3000;
  const csrfMeta = document.querySelector('meta[name="csrf-token"]');
  const csrf = csrfMeta ? csrfMeta.getAttribute('content') : '';
  const path = location.pathname;
  const RANK = { viewer: 0, deployer: 1, approver: 2, admin: 3 };
  let me = null;
  let last = null;
  let timer = null;
  let busy = false;

  const $ = (id) => document.getElementById(id);
  const can = (role) => !!me && RANK[me.role] >= RANK[role];

  // ---- DOM helpers ----
  function add(el, c) {
    if (c === null || c === undefined || c === false) return;
    if (Array.isArray(c)) { c.forEach((x) => add(el, x)); return; }
    el.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'class') el.className = v;
      else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? '' : v);
    }
    add(el, children);
    return el;
  }
  const SVG = 'http://www.w3.org/2000/svg';
  function s(tag, attrs, ...children) {
    const el = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) if (v !== null && v !== undefined) el.setAttribute(k, v);
    children.forEach((c) => el.appendChild(typeof c === 'string' ? document.createTextNode(c) : c));
    return el;
  }
  const link = (href, text) => h('a', { href }, text);
  const devLink = (id) => link('/console/devices/' + encodeURIComponent(id), id);
  const relLink = (r) => (r ? link('/console/releases/' + encodeURIComponent(r), r) : h('span', { class: 'muted' }, '—'));
  const rollLink = (id) => link('/console/rollouts/' + encodeURIComponent(id), id);
  function table(caption, heads, rows, opts) {
    const t = h('table', {},
      h('caption', { class: 'visually-hidden' }, caption),
      h('thead', {}, h('tr', {}, heads.map((x) => h('th', { scope: 'col', class: /^(#|n|devices|samples|requests|cohort)$/i.test(x) ? 'num' : null }, x)))),
      h('tbody', {}, rows.length ? rows.map((r) => h('tr', {}, r.map((c) => (c instanceof Node && c.tagName === 'TD') ? c : h('td', {}, c))))
        : h('tr', {}, h('td', { colspan: String(heads.length), class: 'muted' }, (opts && opts.empty) || 'None.'))));
    return h('div', { class: 'scroll', role: 'region', 'aria-label': caption + ' (table)', tabindex: '0' }, t);
  }
  const num = (n) => h('td', { class: 'num' }, n);
  const kv = (pairs) => h('dl', { class: 'kv' }, pairs.filter((p) => p).map(([k, v]) => [h('dt', {}, k), h('dd', {}, v === null || v === undefined || v === '' ? '—' : v)]));
  const card = (title, ...body) => h('section', { class: 'card', 'aria-labelledby': slug(title) }, h('h2', { id: slug(title) }, title), body);
  const slug = (t) => 'h-' + String(t).toLowerCase().replace(/[^a-z0-9]+/g, '-');
  const badge = (text, cls) => h('span', { class: 'badge ' + (cls || '') }, text);
  const phaseBadge = (p) => badge(String(p || '?').replace(/_/g, ' '), 'ph-' + p);

  function time(sec) {
    if (sec === null || sec === undefined) return '—';
    const d = new Date(sec * 1000);
    return h('time', { datetime: d.toISOString() }, d.toISOString().replace('T', ' ').slice(0, 19) + 'Z');
  }
  function ago(sec) {
    if (!sec) return 'never';
    const d = Math.max(0, Date.now() / 1000 - sec);
    if (d < 90) return Math.round(d) + ' s ago';
    if (d < 5400) return Math.round(d / 60) + ' min ago';
    if (d < 172800) return Math.round(d / 3600) + ' h ago';
    return Math.round(d / 86400) + ' days ago';
  }
  function fmt(v, metric) {
    if (v === null || v === undefined) return '—';
    if (!isFinite(v)) return String(v);
    if (metric && /rate|ratio$/.test(metric) && !/max_ratio/.test(metric) && Math.abs(v) <= 1) return (v * 100).toFixed(2) + '%';
    if (metric && /_ms$/.test(metric)) return v.toFixed(1) + ' ms';
    return Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 1 ? v.toFixed(2) : v.toPrecision(3);
  }
  const release = (r) => (r ? r.app + '@' + r.version : null);
  // A device's apps as it reports them (protocol 1.2: one entry per app; older agents: the one).
  const appsOf = (x) => {
    const st = x.status || {};
    if (st.apps && st.apps.length) return st.apps;
    return st.running ? [{ app: st.running.app, running: st.running, phase: st.phase, lastOutcome: st.lastOutcome }] : [];
  };
  // Every release a device runs, and every one assigned to it (one per app).
  const runningAll = (x) => appsOf(x).map((a) => release(a.running)).filter((r) => r);
  const assignedAll = (x) => (x.assignments && x.assignments.length ? x.assignments : x.assigned ? [x.assigned] : []);
  const relLinks = (rs) => (rs.length ? rs.map((r, i) => [i ? ', ' : '', relLink(r)]) : relLink(null));

  function status(text, isError) {
    const el = $('status');
    el.textContent = text || '';
    el.className = 'status' + (isError ? ' error' : '');
  }

  // ---- the API ----
  async function api(method, url, body) {
    const headers = { Accept: 'application/json' };
    const opts = { method, headers, credentials: 'same-origin' };
    if (method !== 'GET') {
      headers['X-CSRF-Token'] = csrf;
      if (body !== undefined) { headers['Content-Type'] = 'application/json'; opts.body = JSON.stringify(body); }
    }
    const r = await fetch(url, opts);
    if (r.status === 401) {
      location.assign('/console/login?next=' + encodeURIComponent(location.pathname));
      throw new Error('the session ended: log in again');
    }
    let data = null;
    try { data = await r.json(); } catch (_) { data = null; }
    if (!r.ok) {
      const e = new Error((data && data.error) || ('HTTP ' + r.status));
      e.status = r.status;
      e.json = !!(data && data.error);
      throw e;
    }
    return data;
  }
  const maybe = (p) => p.then((v) => ({ ok: true, v }), (e) => ({ ok: false, e }));

  // ---- confirmation ----
  function confirmAction(text, okLabel) {
    const dlg = $('confirm');
    $('confirm-text').textContent = text;
    $('confirm-ok').textContent = okLabel;
    dlg.returnValue = '';
    return new Promise((resolve) => {
      dlg.addEventListener('close', () => resolve(dlg.returnValue === 'ok'), { once: true });
      dlg.showModal();
      $('confirm-cancel').focus();
    });
  }
  function action(id, label, question, run, cls) {
    return h('button', {
      id, type: 'button', class: cls || null,
      onclick: async (ev) => {
        const btn = ev.currentTarget;
        if (!(await confirmAction(question, label))) { btn.focus(); return; }
        btn.disabled = true;
        busy = true;
        status(label + '…');
        try {
          await run();
          status(label + ': done.');
        } catch (e) {
          status(label + ' failed: ' + e.message, true);
        } finally {
          busy = false;
          await refresh(true);
          const again = $(id);
          if (again) again.focus();
        }
      },
    }, label);
  }

  // ---- pages ----
  const pages = [
    [/^\/console\/?$/, fleetPage],
    [/^\/console\/devices\/([^/]+)$/, devicePage],
    [/^\/console\/rollouts\/([^/]+)$/, rolloutPage],
    [/^\/console\/releases\/([^/]+)$/, releasePage],
  ];

  function fleetPage() {
    return {
      title: () => 'Fleet',
      load: async () => {
        const [devices, offline, rollouts, releases] = await Promise.all([
          api('GET', '/api/v1/admin/devices'),
          api('GET', '/api/v1/admin/devices?state=offline'),
          api('GET', '/api/v1/admin/rollouts'),
          api('GET', '/api/v1/admin/releases'),
        ]);
        return { devices, offline: offline.map((d) => d.id), rollouts, releases };
      },
      render: (d) => {
        const live = d.devices.filter((x) => !x.revoked);
        // f gives one key or several (a device with two apps counts under both).
        const count = (f) => {
          const m = new Map();
          live.forEach((x) => {
            const ks = [].concat(f(x) || []);
            (ks.length ? ks : ['(none)']).forEach((k) => m.set(k, (m.get(k) || 0) + 1));
          });
          return [...m.entries()].sort((a, b) => b[1] - a[1] || String(a[0]).localeCompare(String(b[0])));
        };
        const refusing = live.filter((x) => x.status && x.status.lastOutcome && ['refused', 'failed', 'rolledBack'].includes(x.status.lastOutcome.kind));
        const active = d.rollouts.filter((r) => !['completed', 'aborted'].includes(r.rollout.state.phase));
        const incompatible = new Map();
        active.forEach((r) => (r.incompatible || []).forEach(([id, why]) => incompatible.set(id, why)));
        const tile = (n, label, bad) => h('div', { class: 'tile' + (bad && n ? ' bad' : '') }, h('span', { class: 'n' }, String(n)), label);
        const countTable = (caption, head, rows, linker) => table(caption, [head, 'Devices'], rows.map(([k, n]) => [linker && k !== '(none)' ? linker(k) : k, num(String(n))]));
        const out = [
          h('div', { class: 'tiles', role: 'group', 'aria-label': 'Fleet summary' },
            tile(live.length, 'devices'),
            tile(live.length - d.offline.length, 'online'),
            tile(d.offline.length, 'offline', true),
            tile(incompatible.size, 'incompatible', true),
            tile(refusing.length, 'refusing or failing', true),
            tile(active.length, 'active rollouts')),
        ];
        const callouts = [];
        if (d.offline.length) callouts.push(h('div', { class: 'callout' }, h('h2', {}, 'Offline devices'), h('p', {}, d.offline.map((id, i) => [i ? ', ' : '', devLink(id)]))));
        if (incompatible.size) callouts.push(h('div', { class: 'callout' }, h('h2', {}, 'Incompatible devices'), table('Incompatible devices', ['Device', 'Why'], [...incompatible.entries()].map(([id, why]) => [devLink(id), why]))));
        if (refusing.length) callouts.push(h('div', { class: 'callout' }, h('h2', {}, 'Refusing or failing devices'), table('Refusing or failing devices', ['Device', 'Outcome', 'Release', 'Reason'], refusing.map((x) => [devLink(x.id), badge(x.status.lastOutcome.kind, 'ph-' + x.status.lastOutcome.kind), relLink(x.status.lastOutcome.release), x.status.lastOutcome.reason]))));
        out.push(callouts);
        out.push(card('Rollouts', table('Rollouts', ['Rollout', 'Release', 'Phase', 'Step', 'Cohort'], d.rollouts.slice().reverse().map((r) => [
          rollLink(r.rollout.id), relLink(r.rollout.spec.release), phaseBadge(r.rollout.state.phase),
          Math.min(r.rollout.state.step + 1, r.rollout.spec.steps.length) + '/' + r.rollout.spec.steps.length + (r.stepDescription ? ' · ' + r.stepDescription : ''),
          num(String(r.rollout.state.cohort.length)),
        ]), { empty: 'No rollouts yet.' })));
        out.push(h('div', { class: 'grid' },
          card('By app', countTable('Devices by app', 'App', count((x) => appsOf(x).filter((a) => a.running).map((a) => a.app)))),
          card('By release', countTable('Devices by running release', 'Release', count(runningAll), relLink)),
          card('By site', countTable('Devices by site label', 'Site', count((x) => x.labels && x.labels.site))),
          card('By state', countTable('Devices by state', 'State', count((x) => x.status && x.status.phase)))));
        out.push(card('Releases', table('Releases', ['Release', 'Signed by', 'Published', 'Devices'], d.releases.slice().reverse().map((r) => {
          const name = r.release.app + '@' + r.release.version;
          return [relLink(name), h('code', {}, r.signedBy), time(r.published), num(String(live.filter((x) => runningAll(x).includes(name)).length))];
        }), { empty: 'No releases published.' })));
        out.push(card('Devices', table('Devices', ['Device', 'Site', 'Running', 'Assigned', 'State', 'Last seen'], live.slice(0, 500).map((x) => [
          devLink(x.id), (x.labels && x.labels.site) || '—', relLinks(runningAll(x)), relLinks(assignedAll(x)),
          x.status ? phaseBadge(x.status.phase) : '—', d.offline.includes(x.id) ? h('span', { class: 'error' }, 'offline, ' + ago(x.lastSeen)) : ago(x.lastSeen),
        ]))));
        return out;
      },
    };
  }

  function devicePage(id) {
    const logsUrl = '/api/v1/admin/devices/' + encodeURIComponent(id) + '/logs';
    return {
      title: () => 'Device ' + id,
      load: async () => {
        const [dev, history, rollouts, metrics, logs] = await Promise.all([
          api('GET', '/api/v1/admin/devices/' + encodeURIComponent(id)),
          api('GET', '/api/v1/admin/devices/' + encodeURIComponent(id) + '/history'),
          api('GET', '/api/v1/admin/rollouts'),
          maybe(api('GET', '/api/v1/admin/devices/' + encodeURIComponent(id) + '/metrics')),
          maybe(api('GET', logsUrl)),
        ]);
        return { dev, history, rollouts, metrics, logs };
      },
      render: (d) => {
        const x = d.dev;
        const st = x.status || {};
        const inv = x.inventory || {};
        const out = [];
        if (x.revoked) out.push(h('p', { class: 'callout' }, 'This device is revoked.'));
        out.push(h('div', { class: 'grid' },
          card('Releases', kv([
            ['Installed', relLinks(runningAll(x))],
            ['Assigned', x.assigned ? [relLinks(assignedAll(x)), ' (assignment v' + x.assignmentVersion + ')'] : null],
            ['State', st.phase ? phaseBadge(st.phase) : null],
            st.download ? ['Downloading', st.download.release + ': ' + Math.round(100 * st.download.doneBytes / Math.max(1, st.download.totalBytes)) + '%'] : null,
            ['Last seen', x.lastSeen ? [time(x.lastSeen), ' (' + ago(x.lastSeen) + ')'] : 'never'],
            ['Enrolled', time(x.enrolled)],
          ])),
          card('Inventory', kv([
            ['Board', inv.board ? inv.board + (inv.boardModel ? ' (' + inv.boardModel + ')' : '') : null],
            ['RAM', inv.ramMb ? inv.ramMb + ' MB' : null],
            ['Accelerator', inv.accelerator || 'none'],
            ['Runtimes', Object.entries(inv.runtimes || {}).map(([k, v]) => k + ' ' + v).join(', ')],
            ['Agent', inv.agentVersion],
            ['Host name', inv.hostname],
            ['Serial', inv.serial],
          ])),
          card('Labels', Object.keys(x.labels || {}).length ? kv(Object.entries(x.labels).map(([k, v]) => [k, v])) : h('p', { class: 'muted' }, 'No labels.'))));
        if (!x.inventory) out.push(h('p', { class: 'callout info' }, 'This device has not checked in yet.'));
        // Several apps: each with its own state, install and last outcome.
        const apps = appsOf(x);
        if (apps.length > 1) {
          out.push(card('Apps on this device', table('Apps on this device', ['App', 'Installed', 'State', 'Last outcome'], apps.map((a) => [
            a.app, relLink(release(a.running)), phaseBadge(a.phase),
            a.lastOutcome ? [badge(a.lastOutcome.kind, 'ph-' + a.lastOutcome.kind), ' ', relLink(a.lastOutcome.release), a.lastOutcome.reason ? ': ' + a.lastOutcome.reason : ''] : '—',
          ]))));
        }
        // Assignments the server made and what the device reported, newest first.
        const rows = d.history.map((e) => {
          if (e.outcome) {
            const o = e.outcome;
            return [time(e.at), badge(o.kind, 'ph-' + o.kind), relLink(o.release), 'v' + o.assignmentVersion, o.reason || '—'];
          }
          if (e.kind === 'assigned') {
            const [rel, ver, ...rest] = e.detail.split(' ');
            const by = rest.join(' ');
            return [time(e.at), badge('assigned'), relLink(rel), ver || '—', by || 'deployed'];
          }
          let detail = e.detail;
          try {
            const v = JSON.parse(e.detail);
            if (v && typeof v === 'object' && !Array.isArray(v)) detail = Object.entries(v).map(([k, x]) => k + '=' + (typeof x === 'string' ? x : JSON.stringify(x))).join(', ');
          } catch (_) { /* plain text */ }
          return [time(e.at), badge(e.kind), '—', '—', detail];
        });
        out.push(card('Install history', table('Install history', ['When', 'Event', 'Release', 'Assignment', 'Detail or reason'], rows,
          { empty: 'Nothing assigned or reported yet.' })));
        const mine = d.rollouts.filter((r) => r.rollout.state.cohort.includes(id)).reverse();
        out.push(card('Rollouts that included it', table('Rollouts that included this device', ['Rollout', 'Release', 'Started', 'Phase', 'This device'],
          mine.map((r) => [rollLink(r.rollout.id), relLink(r.rollout.spec.release), time(r.rollout.state.startedAt), phaseBadge(r.rollout.state.phase),
            (r.rollout.state.rolledBack || []).includes(id) ? 'rolled back to ' + (r.rollout.baseline || 'its previous release') : 'assigned the release']),
          { empty: 'No rollout has included this device.' })));
        const m = d.metrics.ok ? d.metrics.v : null;
        out.push(card('Metrics (last hour)', m ? kv([
          ['Release', relLink(m.release)],
          ['Reports', String(m.reports)],
          ['Requests', String(m.requests)],
          ['Error rate', fmt(m.errorRate, 'error_rate')],
          ['Latency p50', fmt(m.latencyP50Ms, 'latency_ms')],
          ['Latency p95', fmt(m.latencyP95Ms, 'latency_ms')],
          ['Temperature', m.tempCMax === null || m.tempCMax === undefined ? null : 'max ' + m.tempCMax.toFixed(1) + ' °C, mean ' + (m.tempCMean || 0).toFixed(1) + ' °C'],
          ['Throttled', fmt(m.throttledRatio, 'throttled_ratio')],
        ]) : h('p', { class: 'muted' }, 'Metrics are not available: ' + d.metrics.e.message)));
        out.push(logsCard(d.logs));
        return out;
      },
    };
    function logsCard(r) {
      const fetchButton = h('div', { class: 'actions' }, action('fetch-logs', 'Fetch logs', 'Ask device ' + id + ' for its recent logs at its next check-in?', () => api('POST', logsUrl, {}), 'secondary'));
      if (!r.ok && r.e.status === 404 && !r.e.json) {
        // No such route: this server has no device logs.
        return card('Recent logs', h('p', { class: 'muted', id: 'logs-na' }, 'Device logs are not available on this server.'));
      }
      if (!r.ok && r.e.status === 404) {
        return card('Recent logs', fetchButton, h('p', { class: 'muted', id: 'logs-na' }, 'No logs are available for this device: ' + r.e.message));
      }
      if (!r.ok) return card('Recent logs', h('p', { class: 'error' }, 'Logs could not be read: ' + r.e.message));
      const l = r.v;
      const lines = l.lines || [];
      const at = (v) => (v ? h('time', { datetime: v }, v) : null);
      return card('Recent logs', fetchButton,
        kv([['Requested', at(l.requested_at)], ['Received', at(l.received_at)], ['Pending', l.pending ? 'yes, waiting for the device' : 'no']]),
        lines.length ? h('pre', { class: 'logs', tabindex: '0', 'aria-label': 'Log lines' }, lines.map((x) => x.ts + ' [' + x.source + '] ' + x.line + '\n'))
          : h('p', { class: 'muted' }, 'No log lines yet.'));
    }
  }

  function describe(step) {
    const [kind, v] = Object.entries(step)[0] || ['?', {}];
    if (kind === 'canary') return 'canary ' + (v.devices ? v.devices + ' devices' : v.percent !== undefined ? v.percent + '%' : v.groups + ' groups') + (v.spread_by ? ' spread by ' + v.spread_by : '');
    if (kind === 'analyze') return 'analyze ' + v.duration + ' every ' + (v.interval || '1m');
    if (kind === 'approve') return 'manual approval';
    if (kind === 'pause') return v && v.duration ? 'pause ' + v.duration : 'pause until resumed';
    return kind;
  }
  function gateLabel(g) {
    if (g.name) return g.name;
    const m = g.metric || 'query';
    const parts = [];
    if (g.max !== undefined && g.max !== null) parts.push(m + ' <= ' + g.max);
    if (g.min !== undefined && g.min !== null) parts.push(m + ' >= ' + g.min);
    if (g.max_ratio !== undefined && g.max_ratio !== null) parts.push(m + ' <= ' + g.max_ratio + 'x baseline');
    return parts.join(', ');
  }

  // One gate over time: its value (or its ratio to the baseline) with the interval at each
  // evaluation, against the threshold.
  function gateChart(name, points, gate) {
    const ratio = gate && gate.max_ratio !== undefined && gate.max_ratio !== null && (gate.max === undefined || gate.max === null) && (gate.min === undefined || gate.min === null);
    const metric = gate ? gate.metric : null;
    const thr = gate ? (ratio ? gate.max_ratio : (gate.max !== undefined && gate.max !== null ? gate.max : gate.min)) : null;
    const pts = points.map((p) => {
      const g = p.g;
      if (ratio && g.ratio) return { at: p.at, v: g.ratio[0], lo: g.ratio[1], hi: g.ratio[2], verdict: g.verdict.verdict };
      if (g.value === null || g.value === undefined) return null;
      const [lo, hi] = g.interval || [g.value, g.value];
      return { at: p.at, v: g.value, lo, hi, verdict: g.verdict.verdict };
    }).filter((p) => p && isFinite(p.v));
    const W = 640, H = 220, L = 56, R = 12, T = 12, B = 28;
    const unit = ratio ? 'x baseline' : '';
    const show = (v) => (ratio ? v.toFixed(2) + 'x' : fmt(v, metric));
    const cap = name + (thr !== null && thr !== undefined ? ' (threshold ' + show(thr) + ')' : '');
    const fig = h('figure', { class: 'chart' }, h('figcaption', {}, cap));
    if (!pts.length) { add(fig, h('p', { class: 'muted' }, 'No value yet.')); return fig; }
    let ymin = Math.min(...pts.map((p) => Math.min(p.lo, p.v)), thr === null ? Infinity : thr, 0);
    let ymax = Math.max(...pts.map((p) => Math.max(p.hi, p.v)), thr === null ? -Infinity : thr);
    if (!isFinite(ymax) || ymax <= ymin) ymax = ymin + 1;
    ymax += (ymax - ymin) * 0.08;
    const t0 = pts[0].at, t1 = Math.max(pts[pts.length - 1].at, t0 + 1);
    const x = (t) => L + (W - L - R) * (pts.length === 1 ? 0.5 : (t - t0) / (t1 - t0));
    const y = (v) => T + (H - T - B) * (1 - (Math.min(Math.max(v, ymin), ymax) - ymin) / (ymax - ymin));
    const verdicts = pts.map((p) => p.verdict);
    const last = pts[pts.length - 1];
    const svg = s('svg', { viewBox: '0 0 ' + W + ' ' + H, role: 'img', 'aria-label': cap + ': ' + pts.length + ' evaluations, last ' + show(last.v) + ' [' + show(last.lo) + ', ' + show(last.hi) + '] ' + last.verdict + (unit ? ' ' + unit : '') });
    for (let i = 0; i <= 4; i++) {
      const v = ymin + (ymax - ymin) * i / 4;
      svg.appendChild(s('line', { class: 'grid', x1: L, x2: W - R, y1: y(v), y2: y(v) }));
      svg.appendChild(s('text', { x: L - 4, y: y(v) + 4, 'text-anchor': 'end' }, show(v)));
    }
    svg.appendChild(s('line', { class: 'axis', x1: L, x2: L, y1: T, y2: H - B }));
    svg.appendChild(s('line', { class: 'axis', x1: L, x2: W - R, y1: H - B, y2: H - B }));
    const tl = (t) => new Date(t * 1000).toISOString().slice(11, 19);
    svg.appendChild(s('text', { x: L, y: H - 8 }, tl(t0)));
    svg.appendChild(s('text', { x: W - R, y: H - 8, 'text-anchor': 'end' }, tl(t1)));
    if (pts.length > 1) {
      const band = pts.map((p) => x(p.at) + ',' + y(p.hi)).concat(pts.slice().reverse().map((p) => x(p.at) + ',' + y(p.lo)));
      svg.appendChild(s('polygon', { class: 'band', points: band.join(' ') }));
      svg.appendChild(s('polyline', { class: 'line', points: pts.map((p) => x(p.at) + ',' + y(p.v)).join(' ') }));
    }
    pts.forEach((p) => {
      svg.appendChild(s('line', { class: 'whisker', x1: x(p.at), x2: x(p.at), y1: y(p.lo), y2: y(p.hi) }));
      svg.appendChild(s('circle', { class: 'pt-' + p.verdict, cx: x(p.at), cy: y(p.v), r: 3.5 }));
    });
    if (thr !== null && thr !== undefined) {
      svg.appendChild(s('line', { class: 'threshold', x1: L, x2: W - R, y1: y(thr), y2: y(thr) }));
    }
    add(fig, svg);
    add(fig, h('p', { class: 'legend' }, 'Line and points: the value (' + (ratio ? 'canary/baseline ratio' : 'canary') + ') at each evaluation; shaded band and whiskers: its confidence interval; dashed red line: the threshold. Points: green pass, red fail, amber inconclusive. ' +
      verdicts.filter((v) => v === 'fail').length + ' failing of ' + pts.length + '.'));
    add(fig, h('details', { id: 'data-' + slug(name) }, h('summary', {}, 'Data'), table(name + ' data', ['Time', 'Value', 'Interval', 'Verdict'], pts.map((p) => [time(p.at), show(p.v), '[' + show(p.lo) + ', ' + show(p.hi) + ']', badge(p.verdict, 'v-' + p.verdict)]))));
    return fig;
  }

  function rolloutPage(id) {
    const base = '/api/v1/admin/rollouts/' + encodeURIComponent(id);
    return {
      title: (d) => 'Rollout ' + id + (d ? ' · ' + d.st.rollout.spec.release : ''),
      load: async () => {
        const [st, history, devices] = await Promise.all([api('GET', base), api('GET', base + '/history'), api('GET', '/api/v1/admin/devices')]);
        return { st, history, devices };
      },
      render: (d) => {
        const r = d.st.rollout;
        const spec = r.spec;
        const state = r.state;
        const finished = ['completed', 'aborted'].includes(state.phase);
        const out = [];
        out.push(card('Summary', kv([
          ['Release', relLink(spec.release)],
          ['Baseline', relLink(r.baseline)],
          ['Phase', phaseBadge(state.phase)],
          ['Step', Math.min(state.step + 1, spec.steps.length) + ' of ' + spec.steps.length + (d.st.stepDescription ? ': ' + d.st.stepDescription : '')],
          ['Cohort', state.cohort.length + ' of ' + d.st.eligible + ' eligible devices; ' + d.st.runningRelease + ' run the release'],
          ['Started', time(state.startedAt)],
          state.finishedAt ? ['Finished', time(state.finishedAt)] : null,
          state.stopCause ? ['Stopped by', state.stopCause] : null,
        ])));
        if (state.hold || (state.reason && !finished)) {
          out.push(h('div', { class: 'callout', role: 'note' }, h('h2', {}, 'Holding'),
            state.hold ? h('p', {}, 'Hold: ' + state.hold.kind.replace(/_/g, ' ') + ' since ', time(state.hold.since), state.hold.escalated ? ' (escalated: max_hold passed)' : '') : null,
            state.reason ? h('p', {}, state.reason) : null));
        } else if (state.reason) {
          out.push(h('div', { class: 'callout info' }, h('p', {}, state.reason)));
        }
        // Actions the caller's role allows, in the phases they apply to.
        const acts = [];
        const cmd = (c) => () => api('POST', base + '/' + c, {});
        if (!finished) {
          if (state.phase === 'awaiting_approval' && can('approver')) acts.push(action('act-approve', 'Approve', 'Approve the next step of ' + spec.release + '?', cmd('approve')));
          if (state.phase !== 'paused' && can('deployer')) acts.push(action('act-promote', 'Promote', 'Skip to the next step of ' + spec.release + ' now, without waiting for the analysis?', cmd('promote'), 'secondary'));
          if (state.phase !== 'paused' && can('deployer')) acts.push(action('act-pause', 'Pause', 'Pause the rollout of ' + spec.release + '?', cmd('pause'), 'secondary'));
          if (state.phase === 'paused' && can('deployer')) acts.push(action('act-resume', 'Resume', 'Resume the rollout of ' + spec.release + '?', cmd('resume')));
          if (can('deployer')) acts.push(action('act-abort', 'Abort', 'Abort the rollout of ' + spec.release + '? Every device that got it goes back to ' + (r.baseline || 'its previous release') + '.', cmd('abort'), 'danger'));
        }
        if (r.baseline && can('deployer')) {
          const [app, version] = r.baseline.split('@');
          acts.push(action('act-rollback', 'Roll back to ' + r.baseline, 'Assign ' + r.baseline + ' to every device of ' + app + '?', () => api('POST', '/api/v1/admin/deployments?scope=app', { app, version, selector: {} }), 'danger'));
        }
        if (acts.length) out.push(h('div', { class: 'actions', role: 'group', 'aria-label': 'Rollout actions' }, acts));

        const specGates = new Map((spec.gates || []).map((g) => [gateLabel(g), g]));
        const lastGates = state.lastGates || [];
        out.push(card('Gates', lastGates.length ? table('Gates at the last evaluation', ['Gate', 'Value [interval]', 'Verdict', 'Samples', 'Why'], lastGates.map((g) => {
          const gate = specGates.get(g.gate);
          const v = g.value === null || g.value === undefined ? '—' : fmt(g.value, gate && gate.metric) + (g.interval ? ' [' + fmt(g.interval[0], gate && gate.metric) + ', ' + fmt(g.interval[1], gate && gate.metric) + ']' : '') + (g.ratio ? ', ' + g.ratio[0].toFixed(2) + 'x [' + g.ratio[1].toFixed(2) + ', ' + g.ratio[2].toFixed(2) + '] baseline' : '');
          return [g.gate + (g.group ? ' [' + g.group + ']' : ''), v, badge(g.verdict.verdict, 'v-' + g.verdict.verdict), num(String(g.samples) + (g.needed ? ' (+' + g.needed + ' needed)' : '')), g.verdict.why || ''];
        })) : h('p', { class: 'muted' }, 'Not evaluated yet.')));

        const series = new Map();
        d.history.forEach((rec) => (rec.gates || []).forEach((g) => {
          const name = g.gate + (g.group ? ' [' + g.group + ']' : '');
          if (!series.has(name)) series.set(name, { gate: specGates.get(g.gate), pts: [] });
          series.get(name).pts.push({ at: rec.at, g });
        }));
        if (series.size) out.push(card('Gates over time', [...series.entries()].map(([name, sr]) => gateChart(name, sr.pts, sr.gate))));

        const firstAt = new Map();
        d.history.forEach((rec) => { if (!firstAt.has(rec.step)) firstAt.set(rec.step, rec.at); });
        out.push(card('Steps', h('ol', { class: 'timeline' }, spec.steps.map((st, i) => {
          const cls = i < state.step || (finished && state.phase === 'completed') ? 'done' : i === state.step ? 'current' : '';
          return h('li', { class: cls, 'aria-current': i === state.step && !finished ? 'step' : null }, (i + 1) + '. ' + describe(st), firstAt.has(i) ? [' · ', time(firstAt.get(i))] : '');
        }))));

        // The engine's groups (edgecd_rollout::cohort::group_key): board, accelerator and
        // runtime from the inventory, anything else a label; "none" when missing.
        const groupBy = spec.group_by || [];
        const runtime = (r.requirements && r.requirements.runtime && r.requirements.runtime.name) || '';
        const byId = new Map(d.devices.map((x) => [x.id, x]));
        const groupOf = (x) => groupBy.map((attr) => {
          const inv = (x && x.inventory) || {};
          const v = attr === 'board' ? inv.board : attr === 'accelerator' ? inv.accelerator
            : attr === 'runtime' ? (inv.runtimes && inv.runtimes[runtime] ? runtime + '@' + inv.runtimes[runtime] : null)
              : (x && x.labels || {})[attr];
          return v || 'none';
        }).join('/');
        const groups = new Map();
        state.cohort.forEach((dev) => {
          const x = byId.get(dev);
          const g = groupBy.length ? groupOf(x) : 'all';
          if (!groups.has(g)) groups.set(g, { ids: [], sites: new Set() });
          groups.get(g).ids.push(dev);
          groups.get(g).sites.add((x && x.labels && x.labels.site) || 'none');
        });
        out.push(card('Cohort by group', table('Cohort by group', ['Group (' + (groupBy.join('/') || 'none') + ')', 'Devices', 'Sites', 'Members'],
          [...groups.entries()].sort().map(([g, v]) => [g + ((state.excludedGroups || []).includes(g) ? ' (excluded)' : ''), num(String(v.ids.length)), [...v.sites].sort().join(', '), h('span', {}, v.ids.slice(0, 20).map((x, i) => [i ? ', ' : '', devLink(x)]), v.ids.length > 20 ? ' …' : '')]),
          { empty: 'No device assigned yet.' })));

        if ((d.st.incompatible || []).length) out.push(card('Incompatible devices', table('Incompatible devices', ['Device', 'Why'], d.st.incompatible.map(([dev, why]) => [devLink(dev), why]))));
        out.push(card('Decision audit', table('Decision audit', ['Time', 'Step', 'Kind', 'Decision', 'Cohort'], d.history.slice().reverse().map((rec) => [time(rec.at), String(rec.step + 1), rec.kind, rec.message, num(String(rec.cohort))]))));
        return out;
      },
    };
  }

  function releasePage(id) {
    return {
      title: () => 'Release ' + id,
      load: async () => {
        const [details, devices] = await Promise.all([
          api('GET', '/api/v1/admin/releases/' + encodeURIComponent(id) + '/details'),
          api('GET', '/api/v1/admin/devices'),
        ]);
        return { details, devices };
      },
      render: (d) => {
        const info = d.details.release;
        const rel = info.release;
        const p = d.details.provenance;
        const sig = d.details.signature;
        const out = [];
        if (can('deployer')) {
          out.push(h('div', { class: 'actions', role: 'group', 'aria-label': 'Release actions' },
            action('act-rollback', 'Roll back ' + rel.app + ' to ' + rel.version, 'Assign ' + id + ' to every device of ' + rel.app + '?', () => api('POST', '/api/v1/admin/deployments?scope=app', { app: rel.app, version: rel.version, selector: {} }), 'danger')));
        }
        out.push(h('div', { class: 'grid' },
          card('Provenance', p ? kv([
            ['Created', p.created],
            ['Bundle digest', h('code', {}, p.bundleDigest)],
            ['Archive', h('code', {}, p.archiveDigest + ' (' + p.archiveSize + ' bytes)')],
            ['Runtime image', p.image ? h('code', {}, p.image) : 'none (native runtime)'],
            ['Image signed', p.image ? (p.imageSigned ? 'yes' : 'no') : null],
            ['Published', time(info.published)],
          ]) : h('p', { class: 'muted' }, 'The signed release manifest is not on this server.')),
          card('Signature', kv([
            ['Key id', h('code', {}, sig.keyId)],
            ['Key name', sig.keyName],
            ['Trusted now', sig.trusted ? 'yes' : h('span', { class: 'error' }, 'no: the key is no longer trusted')],
            ['Hardware', rel.hardware.board + (rel.hardware.accelerator ? ' + ' + rel.hardware.accelerator : '') + (rel.hardware.minRamMb ? ', ≥ ' + rel.hardware.minRamMb + ' MB' : '')],
            ['Runtime', rel.runtime.name + ' ' + rel.runtime.version],
          ]))));
        const sb = d.details.sbom;
        out.push(card('SBOM', sb ? [kv([
          ['Format', sb.format + ' ' + sb.specVersion],
          ['Describes', (sb.component.name || '?') + ' ' + (sb.component.version || '')],
          ['Components', String(sb.components) + ' (' + Object.entries(sb.byType).map(([k, v]) => v + ' ' + k).join(', ') + ')'],
        ]), table('SBOM components', ['Name', 'Version', 'Type', 'Package URL'], sb.list.slice(0, 50).map((c) => [c.name || '?', c.version || '—', c.type || '—', c.purl ? h('code', {}, c.purl) : '—']))]
          : h('p', { class: 'muted' }, 'No SBOM on this server for this release.')));
        const runs = d.devices.filter((x) => !x.revoked && runningAll(x).includes(id));
        const assigned = d.devices.filter((x) => !x.revoked && assignedAll(x).includes(id) && !runningAll(x).includes(id));
        out.push(card('Where it runs', h('p', {}, runs.length + ' devices run it; ' + assigned.length + ' more are assigned it.'),
          table('Devices running or assigned this release', ['Device', 'Site', 'State'], runs.concat(assigned).slice(0, 500).map((x) => [devLink(x.id), (x.labels && x.labels.site) || '—', runs.includes(x) ? 'running' : 'assigned']))));
        return out;
      },
    };
  }

  // ---- the loop ----
  let page = null;
  for (const [re, make] of pages) {
    const m = path.match(re);
    if (m) { page = make(...m.slice(1).map(decodeURIComponent)); break; }
  }

  async function refresh(force) {
    if (!page || (busy && !force) || $('confirm').open) return;
    try {
      const data = await page.load();
      const key = JSON.stringify(data, (k, v) => (k === 'lastSeen' ? undefined : v));
      if (!force && key === last) return;
      last = key;
      // Keep what the reader was at across the re-render: the focused button or link, and
      // the open "Data" tables.
      const content = $('content');
      const active = document.activeElement;
      const focus = active && content.contains(active)
        ? (active.id ? { id: active.id } : active.tagName === 'A' ? { href: active.getAttribute('href'), nth: [...content.querySelectorAll('a')].filter((a) => a.getAttribute('href') === active.getAttribute('href')).indexOf(active) } : null)
        : null;
      const open = [...content.querySelectorAll('details[open]')].map((d) => d.id).filter((x) => x);
      const title = page.title(data);
      $('title').textContent = title;
      document.title = title + ' · edgecd console';
      content.replaceChildren(...[page.render(data)].flat(Infinity).filter((x) => x));
      open.forEach((id) => { const d = $(id); if (d) d.open = true; });
      if (focus && focus.id && $(focus.id)) $(focus.id).focus();
      else if (focus && focus.href) {
        const same = [...content.querySelectorAll('a')].filter((a) => a.getAttribute('href') === focus.href);
        const el = same[Math.max(0, focus.nth)] || same[0];
        if (el) el.focus();
      }
      content.setAttribute('data-updated', new Date().toISOString());
    } catch (e) {
      status('Could not load: ' + e.message, true);
      if (last === null) $('title').textContent = 'Not found';
    }
  }

  async function start() {
    try {
      me = await api('GET', '/api/v1/admin/whoami');
      $('who').textContent = me.name + ' (' + me.role + ')';
    } catch (e) {
      status('Could not load: ' + e.message, true);
      return;
    }
    if (!page) { $('title').textContent = 'Not found'; status('No console page at ' + path, true); return; }
    await refresh(true);
    timer = setInterval(() => refresh(false), POLL_MS);
  }
  document.addEventListener('visibilitychange', () => { if (!document.hidden) refresh(false); });
  window.addEventListener('beforeunload', () => clearInterval(timer));
  start();
})();
