// The review page's script (inlined into the page by l3edge/report.py): filter, decide, download, import.
// Decisions live in localStorage under the results file's key; nothing leaves the page but a download.
(function () {
  'use strict';
  var D = JSON.parse(document.getElementById('l3data').textContent);
  var root = document.documentElement.dataset;
  var cards = [].slice.call(document.querySelectorAll('article.card'));
  var $ = function (id) { return document.getElementById(id); };
  var q = $('q'), st = $('status'), dsel = $('decision'), lsel = $('level'), who = $('reviewer');
  var KEY = 'l3edge-review:' + D.key;
  var COLS = ['path', 'series_instance_uid', 'level', 'decision', 'z_mm', 'slice_index', 'sop_instance_uid',
    'reviewer', 'time', 'results'];
  var DECISIONS = ['accept', 'correct', 'reject'];
  var store = load(), cur = -1, level = D.level, geos = {}, noStrip = {};
  var index = {};
  D.scans.forEach(function (s, i) { index[skey(s.p, s.s)] = i; });

  function skey(p, s) { return JSON.stringify([p, s || '']); }
  function load() {
    try {
      var v = JSON.parse(localStorage.getItem(KEY) || 'null');
      if (v && v.d) { return v; }
    } catch (e) { /* a broken entry: start afresh */ }
    return { reviewer: '', d: {} };
  }
  function save() {
    try { localStorage.setItem(KEY, JSON.stringify(store)); } catch (e) { say('cannot keep decisions: ' + e); }
  }
  function say(text) { $('msg').textContent = text; root.msg = text; }
  function expand(v) {
    if (Array.isArray(v)) { return v; }
    var out = [];
    for (var i = 0; i < v.n; i++) { out.push(Math.round((v.a + i * v.d) * 1000) / 1000); }
    return out;
  }
  function geo(i) {  // the QA picture's geometry, rows expanded on first use
    var g = D.scans[i].g;
    if (!g) { return null; }
    if (!geos[i]) {
      var u = g.u || { p: '', s: [] };
      geos[i] = { g: g, z: expand(g.z), k: expand(g.k), u: function (r) {
        var x = u.s[r]; return x === null || x === undefined ? '' : u.p + x; } };
    }
    return geos[i];
  }
  function dec(i, lv) { var e = store.d[skey(D.scans[i].p, D.scans[i].s)]; return e ? e[lv || level] : undefined; }
  function setDec(i, rec) {
    var k = skey(D.scans[i].p, D.scans[i].s);
    if (!store.d[k]) { store.d[k] = {}; }
    if (rec) { store.d[k][level] = rec; } else { delete store.d[k][level]; }
    save(); draw(i); count();
  }
  function stamp(rec) { rec.reviewer = who.value.trim(); rec.time = new Date().toISOString(); return rec; }
  function nearestRow(G, z) {
    var best = 0, bd = Infinity;
    for (var r = 0; r < G.z.length; r++) { var d = Math.abs(G.z[r] - z); if (d < bd) { bd = d; best = r; } }
    return best;
  }
  function rowRec(i, r) {
    var G = geo(i);
    return stamp({ decision: 'correct', z_mm: G.z[r], slice_index: G.k[r], sop_instance_uid: G.u(r), row: r });
  }
  function currentRow(i) {  // the row of the line shown: the decision's, else the model's pick
    var G = geo(i), d = dec(i), m = D.scans[i].m[level];
    if (!G) { return null; }
    if (d && d.row !== undefined && d.decision !== 'reject') { return d.row; }
    if (d && d.z_mm !== '' && d.z_mm !== null && d.decision !== 'reject') { return nearestRow(G, +d.z_mm); }
    if (m) { return nearestRow(G, m[0]); }
    return null;
  }
  function draw(i) {  // a card's decision badge and its line on the picture
    var c = cards[i], d = dec(i), badge = c.querySelector('.dec'), pic = c.querySelector('.pic');
    badge.className = 'dec' + (d ? ' ' + d.decision : '');
    badge.textContent = d ? level + ' ' + d.decision + 'ed' +
      (d.decision !== 'reject' && d.z_mm !== '' ? ' z = ' + (+d.z_mm).toFixed(1) + ' mm, slice ' + d.slice_index : '')
      : '';
    c.dataset.decision = d ? d.decision : '';
    var G = pic && geo(i), line = pic && pic.querySelector('.line');
    if (!G) { return; }
    var r = (d || i === cur) ? currentRow(i) : null;
    if (r === null || (d && d.decision === 'reject')) { if (line) { line.hidden = true; } axial(i, null); return; }
    if (!line) { line = document.createElement('div'); pic.appendChild(line); }
    var img = pic.querySelector('img'), s = img.clientHeight / G.g.h;
    line.className = 'line' + (d ? '' : ' model');
    line.hidden = false;
    line.style.top = ((G.g.my + (G.g.zt - G.z[r]) / G.g.hm * G.g.mh) * s - 1) + 'px';
    line.style.width = (G.g.mw * s) + 'px';
    c.dataset.row = r;
    if (i === cur) { root.row = r; }
    axial(i, r);
  }
  function nearestTile(T, z) {  // the thumbnail nearest z, or -1 when none is within a step (between levels)
    var j = -1, bd = Infinity, tz = T.zs || (T.zs = expand(T.z));
    for (var t = 0; t < tz.length; t++) { var dz = Math.abs(tz[t] - z); if (dz < bd) { bd = dz; j = t; } }
    return bd <= T.s + 0.01 ? j : -1;
  }
  function axial(i, r) {  // the thumbnail (predict --qa-axial) nearest the line's z, over the picture's own slice
    var c = cards[i], pic = c.querySelector('.pic'), G = geo(i), A = G && G.g.ax, box = pic.querySelector('.ax');
    var j = A && A.v && A.t && r !== null && !noStrip[i] ? nearestTile(A.t, G.z[r]) : -1;
    if (j < 0) {  // none: the picture's own slice shows
      if (box) { box.hidden = true; }
      delete c.dataset.ax; if (i === cur) { delete root.ax; }
      return;
    }
    if (!box) {  // the strip is fetched when a card first shows it
      box = document.createElement('div'); box.className = 'ax';
      var strip = document.createElement('img'), tag = document.createElement('span');
      strip.alt = ''; strip.addEventListener('error', function () { noStrip[i] = 1; draw(i); });
      strip.src = A.t.f; box.appendChild(strip); box.appendChild(tag); pic.appendChild(box);
    }
    var s = pic.querySelector(':scope > img').clientHeight / G.g.h, w = A.v[2] * s, h = A.v[3] * s;
    var im = box.firstChild;
    box.hidden = false;
    box.style.left = A.v[0] * s + 'px'; box.style.top = A.v[1] * s + 'px';
    box.style.width = w + 'px'; box.style.height = h + 'px';
    im.style.width = w * A.t.zs.length + 'px'; im.style.height = h + 'px'; im.style.left = -j * w + 'px';
    box.lastChild.textContent = 'z ' + A.t.zs[j].toFixed(1);
    c.dataset.ax = j;
    if (i === cur) { root.ax = j; }
  }
  function visible(i) { return !cards[i].hidden; }
  function setCur(i) {
    if (i < 0 || i >= cards.length) { return; }
    var old = cur;
    if (old >= 0) { cards[old].classList.remove('cur'); }
    cur = i;
    cards[i].classList.add('cur');
    cards[i].scrollIntoView({ block: 'nearest' });
    root.cur = i;
    if (old >= 0) { draw(old); }
    draw(i);
  }
  function step(dir) {
    for (var i = cur + dir; i >= 0 && i < cards.length; i += dir) { if (visible(i)) { setCur(i); return; } }
  }
  function nextUndecided() {  // an undecided doubtful card first (status review), else the next undecided one
    var n = cards.length;
    for (var j = 0; j < n; j++) {
      if (j !== cur && visible(j) && !dec(j) && cards[j].dataset.status === 'review') { setCur(j); return; }
    }
    for (var k = 1; k <= n; k++) {
      var i = (cur + k) % n;
      if (visible(i) && !dec(i)) { setCur(i); return; }
    }
    say('every shown scan has a ' + level + ' decision');
  }
  function accept() {
    var m = D.scans[cur].m[level];
    if (!m) { say('no ' + level + ' to accept here: click its row on the picture, or reject'); return; }
    var G = geo(cur), rec = stamp({ decision: 'accept', z_mm: m[0], slice_index: m[1], sop_instance_uid: m[2] });
    if (G) { rec.row = nearestRow(G, m[0]); }
    setDec(cur, rec); nextUndecided();
  }
  function reject() {
    setDec(cur, stamp({ decision: 'reject', z_mm: '', slice_index: '', sop_instance_uid: '' }));
    nextUndecided();
  }
  function move(delta) {
    var G = geo(cur);
    if (!G) { say('no QA picture geometry for this scan: accept or reject only'); return; }
    var r = currentRow(cur);
    if (r === null) { r = Math.floor(G.z.length / 2) - delta; }
    setDec(cur, rowRec(cur, Math.max(0, Math.min(G.z.length - 1, r + delta))));
  }
  function clickPic(ev) {
    var c = ev.currentTarget.closest('article'), i = cards.indexOf(c), G = geo(i);
    if (!G) { return; }
    var img = ev.currentTarget, s = G.g.h / img.clientHeight, x = ev.offsetX * s, y = ev.offsetY * s;
    if (x > G.g.mx + G.g.mw || y < G.g.my || y > G.g.my + G.g.mh) { return; }  // outside the MIP
    setCur(i);
    setDec(i, rowRec(i, nearestRow(G, G.g.zt - (y - G.g.my) / G.g.mh * G.g.hm)));
  }
  function count() {
    var n = 0, k = { accept: 0, correct: 0, reject: 0 }, shown = 0;
    for (var i = 0; i < cards.length; i++) { var d = dec(i); if (d) { n++; k[d.decision]++; } }
    cards.forEach(function (c) { if (!c.hidden) { shown++; } });
    $('decided').textContent = level + ': ' + n + ' decided (' + k.accept + ' accepted, ' + k.correct +
      ' corrected, ' + k.reject + ' rejected), ' + (cards.length - n) + ' left';
    root.decided = n; root.left = cards.length - n; root.shown = shown; $('shown').textContent = shown;
  }
  function apply() {
    var text = q.value.trim().toLowerCase(), s = st.value, dv = dsel.value;
    cards.forEach(function (c, i) {
      var d = dec(i), ok = (!s || c.dataset.status === s) && (!text || c.dataset.text.indexOf(text) >= 0);
      if (dv === 'undecided') { ok = ok && !d; } else if (dv === 'decided') { ok = ok && !!d; }
      else if (dv) { ok = ok && !!d && d.decision === dv; }
      c.hidden = !ok;
    });
    count();
  }
  function csvCell(v) {
    v = v === null || v === undefined ? '' : String(v);
    return /[",\r\n]/.test(v) ? '"' + v.replace(/"/g, '""') + '"' : v;
  }
  function csvText() {
    var lines = [COLS.join(',')];
    D.scans.forEach(function (s) {
      var e = store.d[skey(s.p, s.s)] || {};
      D.levels.forEach(function (lv) {
        var d = e[lv];
        if (!d) { return; }
        lines.push([s.p, s.s, lv, d.decision, d.z_mm, d.slice_index, d.sop_instance_uid, d.reviewer, d.time,
          D.key].map(csvCell).join(','));
      });
    });
    return lines.join('\r\n') + '\r\n';
  }
  function download() {
    var a = document.createElement('a');
    a.href = URL.createObjectURL(new Blob([csvText()], { type: 'text/csv' }));
    a.download = 'corrections.csv';
    document.body.appendChild(a); a.click(); a.remove();
    say('downloaded corrections.csv');
  }
  function parseCsv(text) {  // RFC 4180: quoted cells, doubled quotes, CRLF or LF
    var rows = [], row = [], cell = '', i = 0, quoted = false;
    for (; i < text.length; i++) {
      var ch = text[i];
      if (quoted) {
        if (ch === '"') { if (text[i + 1] === '"') { cell += '"'; i++; } else { quoted = false; } }
        else { cell += ch; }
      } else if (ch === '"') { quoted = true; }
      else if (ch === ',') { row.push(cell); cell = ''; }
      else if (ch === '\n' || ch === '\r') {
        if (ch === '\r' && text[i + 1] === '\n') { i++; }
        row.push(cell); rows.push(row); row = []; cell = '';
      } else { cell += ch; }
    }
    if (cell !== '' || row.length) { row.push(cell); rows.push(row); }
    return rows;
  }
  function importCsv(text) {
    var rows = parseCsv(text.replace(/^\ufeff/, '')), head = rows.shift() || [], col = {};
    head.forEach(function (h, j) { col[h.trim()] = j; });
    var miss = COLS.slice(0, 4).filter(function (c) { return !(c in col); });
    if (miss.length) { say('import refused: no column ' + miss.join(', ')); return; }
    var other = rows.filter(function (r) { return 'results' in col && r[col.results] && r[col.results] !== D.key; });
    if (other.length) { say('import refused: made for results ' + other[0][col.results] + ', not ' + D.key); return; }
    var n = 0, unknown = 0, dup = 0, seen = {};
    rows.forEach(function (r) {
      if (r.length === 1 && r[0] === '') { return; }
      var get = function (c) { return c in col ? (r[col[c]] || '') : ''; };
      var i = index[skey(get('path'), get('series_instance_uid'))], lv = get('level').toUpperCase();
      if (i === undefined || D.levels.indexOf(lv) < 0 || DECISIONS.indexOf(get('decision')) < 0) {
        unknown++; return;
      }
      var k = skey(D.scans[i].p, D.scans[i].s);
      if (seen[k + lv]) { dup++; }
      seen[k + lv] = 1;
      var rec = { decision: get('decision'), z_mm: get('z_mm'), slice_index: get('slice_index'),
        sop_instance_uid: get('sop_instance_uid'), reviewer: get('reviewer'), time: get('time') };
      var G = geo(i);
      if (G && rec.slice_index !== '') { var r2 = G.k.indexOf(+rec.slice_index); if (r2 >= 0) { rec.row = r2; } }
      if (!store.d[k]) { store.d[k] = {}; }
      store.d[k][lv] = rec; n++;
    });
    save(); cards.forEach(function (c, i) { draw(i); }); apply();
    say('imported ' + n + ' decisions' + (unknown ? ', ' + unknown + ' rows skipped (a scan not on this page, another level or decision)' : '') +
      (dup ? ', ' + dup + ' repeated rows (the later one kept)' : ''));
  }
  function onKey(ev) {
    var t = ev.target.tagName;
    if (t === 'INPUT' || t === 'SELECT' || t === 'TEXTAREA') {
      if (ev.key === 'Escape' || ev.key === 'Enter') { ev.target.blur(); }
      return;
    }
    if (ev.ctrlKey || ev.metaKey || ev.altKey) { return; }
    var k = ev.key, acts = {
      j: function () { step(1); }, ArrowRight: function () { step(1); },
      k: function () { step(-1); }, ArrowLeft: function () { step(-1); },
      a: accept, r: reject, x: reject,
      ArrowUp: function () { move(-1); }, w: function () { move(-1); },
      ArrowDown: function () { move(1); }, s: function () { move(1); },
      Enter: nextUndecided, ' ': nextUndecided,
      u: function () { setDec(cur, null); }, Backspace: function () { setDec(cur, null); },
      l: function () { cycle(1); }, L: function () { cycle(-1); },
      '/': function () { q.focus(); }, d: download,
      '?': function () { $('help').hidden = !$('help').hidden; }
    };
    if (!acts[k]) { return; }
    ev.preventDefault();
    var onCard = ['a', 'r', 'x', 'ArrowUp', 'w', 'ArrowDown', 's', 'u', 'Backspace'].indexOf(k) >= 0;
    if (onCard && cur < 0) { nextUndecided(); }
    if (!onCard || cur >= 0) { acts[k](); }
  }
  function cycle(dir) {
    var j = D.levels.indexOf(level);
    setLevel(D.levels[(j + dir + D.levels.length) % D.levels.length]);
  }
  function setLevel(lv) {
    level = lv; lsel.value = lv; root.level = lv;
    cards.forEach(function (c, i) { draw(i); }); apply();
  }

  D.levels.forEach(function (lv) { var o = document.createElement('option'); o.value = o.textContent = lv; lsel.appendChild(o); });
  lsel.value = level; root.level = level;
  who.value = store.reviewer || '';
  who.addEventListener('change', function () { store.reviewer = who.value.trim(); save(); });
  lsel.addEventListener('change', function () { setLevel(lsel.value); lsel.blur(); });
  q.addEventListener('input', apply); st.addEventListener('change', apply); dsel.addEventListener('change', apply);
  $('download').addEventListener('click', download);
  $('import').addEventListener('change', function (ev) {
    var f = ev.target.files[0];
    if (f) { f.text().then(importCsv); }
    ev.target.value = '';
  });
  document.addEventListener('keydown', onKey);
  cards.forEach(function (c, i) {
    var img = c.querySelector('.pic img');
    if (img) { img.addEventListener('click', clickPic); img.addEventListener('load', function () { draw(i); }); }
    c.addEventListener('mousedown', function (ev) { if (ev.target.tagName !== 'A' && ev.target !== img) { setCur(i); } });
  });
  var m = /[#&]q=([^&]*)/.exec(location.hash); if (m) { q.value = decodeURIComponent(m[1]); }
  var m2 = /[#&]status=([^&]*)/.exec(location.hash); if (m2) { st.value = decodeURIComponent(m2[1]); }
  apply();
  cards.forEach(function (c, i) { if (dec(i)) { draw(i); } });
  nextUndecided();
  root.uiMs = Math.round(performance.now());
  root.ui = '1';
  // Thumbnails in the page are decoded before data-ready; files beside it (--no-embed) load as they come into view.
  var imgs = [].slice.call(document.querySelectorAll('article .pic img:not([loading=lazy])'));
  Promise.all(imgs.map(function (i) { return i.decode().then(function () { return 1; }, function () { return 0; }); }))
    .then(function (r) {
      var ok = r.reduce(function (a, b) { return a + b; }, 0);
      root.thumbs = ok + '/' + imgs.length;
      if (imgs.length) {
        var b = imgs[0].getBoundingClientRect();
        root.firstThumb = [b.left, b.top, b.width, b.height].map(Math.round).join(',');
      }
      if (cur >= 0) { draw(cur); }
      root.ready = '1';
    });
})();
