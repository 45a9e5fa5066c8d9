// The corpus page: one long text held by the server (GET /api/status, /api/window, /api/lines, /api/tracks,
// POST /api/edit, /api/corpus/select, /api/corpus/match; docs/explorer.md). Only the visible window is
// fetched and drawn. Vanilla JS, no build step, nothing from the network.
'use strict';
(function () {
  var $ = function (id) { return document.getElementById(id); };
  var CODES = '0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ';
  var BEFORE = 2000, AFTER = 5000, PLOT = 240;
  var S = { info: null, length: 0, version: -1, pos: 0, win: null, sel: null, selUnits: [], matches: [], hist: [],
            status: null, seq: 0 };

  function esc(s) { return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;'); }
  function shown(c) { var n = c.charCodeAt(0); if (n === 13) return '\u2190'; return (n < 32 && c !== '\n' && c !== '\t') ? String.fromCharCode(0x2400 + n) : c; }
  function showError(m) { $('error').textContent = m; $('error').hidden = !m; }
  function api(path, body) {
    var o = body === undefined ? {} : { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) };
    return fetch(path, o).then(function (r) {
      return r.json().then(function (d) { if (!r.ok) throw new Error(d.error || ('HTTP ' + r.status)); return d; });
    }).catch(function (e) { showError(e.message); throw e; });
  }
  function q(o) { return Object.keys(o).filter(function (k) { return o[k] !== null && o[k] !== undefined; })
    .map(function (k) { return k + '=' + encodeURIComponent(o[k]); }).join('&'); }
  function f16(b64) {  // base64 little-endian float16 -> Float32Array
    var bin = atob(b64), n = bin.length >> 1, out = new Float32Array(n);
    for (var i = 0; i < n; i++) {
      var h = bin.charCodeAt(2 * i) | (bin.charCodeAt(2 * i + 1) << 8);
      var s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 31, m = h & 1023;
      out[i] = e === 0 ? s * m * Math.pow(2, -24) : e === 31 ? (m ? NaN : s * Infinity) : s * (1 + m / 1024) * Math.pow(2, e - 15);
    }
    return out;
  }
  function params() { return { model: $('model').value, name: $('name').value, unit: parseInt($('unit').value, 10) || 0 }; }

  // ---- the text window ------------------------------------------------------------------------------
  function load() {
    var p = params(), from = Math.max(0, S.pos - BEFORE), to = Math.min(S.length, S.pos + AFTER), ticket = ++S.seq;
    if (to <= from) return Promise.resolve();
    return api('/api/window?' + q({ model: p.model, name: p.name, unit: p.unit, from: from, to: to })).then(function (d) {
      if (ticket !== S.seq) return;
      showError(''); S.win = d; S.length = d.length; S.version = d.version;
      render(); loadPlot();
    }, function () {});
  }
  function render() {
    var d = S.win; if (!d) return;
    var chars = Array.from(d.text), lo = S.pos - d.from, out = [], prefix = d.scale.class_prefix, codes = d.levels;
    var marks = function (t) {
      var a = t + d.from;
      if (S.sel && a >= S.sel.from && a < S.sel.to) return ' sel';
      for (var i = 0; i < S.matches.length; i++) if (a >= S.matches[i].start && a < S.matches[i].end) return ' mk';
      return '';
    };
    var s = Math.max(0, lo);
    for (var t = s + 1; t <= chars.length; t++) {
      if (t < chars.length && codes[t] === codes[s] && chars[t] !== '\n' && chars[s] !== '\n' && marks(t) === marks(s)) continue;
      var cls = prefix + CODES.indexOf(codes[s]) + marks(s);
      out.push(chars[s] === '\n' ? '<u class="' + cls + '" data-s="' + (s + d.from) + '">\n</u>'
        : '<i class="' + cls + '" data-s="' + (s + d.from) + '">' + esc(chars.slice(s, t).map(shown).join('')) + '</i>');
      s = t;
    }
    $('view').innerHTML = out.join('');
    $('view').dataset.shown = S.pos + ':' + d.to + ':' + d.version + ':' + d.name + ':' + d.unit;
    $('label').textContent = d.label;
    var bar = ''; for (var i = 0; i < d.scale.steps; i += 2) bar += '<i class="' + prefix + i + '"></i>';
    $('scale').innerHTML = '<span class="rl-scale">' + esc(d.shown_label) + ' ' + d.scale.lo + '<span class="bar">' + bar + '</span>' + d.scale.hi + '</span>';
    $('where').textContent = '#' + S.pos.toLocaleString() + ' of ' + S.length.toLocaleString();
    drawMinimap();
  }
  function go(pos) {
    S.pos = Math.max(0, Math.min(Math.max(0, S.length - 1), Math.round(pos)));
    $('goto').value = S.pos;
    var d = S.win;
    if (d && d.version === S.version && S.pos >= d.from && Math.min(S.length, S.pos + 3000) <= d.to) { render(); loadPlot(); return; }
    load();
  }
  function scrollLines(n) {  // move the view's start by n lines, within the loaded window when possible
    var d = S.win; if (!d) return;
    var text = d.text, i = S.pos - d.from;
    if (n > 0) { for (var k = 0; k < n; k++) { var j = text.indexOf('\n', i); if (j < 0) { i = text.length; break; } i = j + 1; } }
    else { i = Math.max(0, i - 1); for (k = 0; k < -n + 1; k++) { j = text.lastIndexOf('\n', i - 1); if (j < 0) { i = 0; break; } i = j; } if (i > 0) i++; }
    go(d.from + i);
  }

  // ---- minimap: the whole text; traced part, the view, matches ------------------------------------------
  function drawMinimap() {
    var c = $('minimap'), w = c.width = c.clientWidth, h = c.height, g = c.getContext('2d'), T = Math.max(1, S.length);
    g.fillStyle = '#eeeeea'; g.fillRect(0, 0, w, h);
    var st = S.status && S.status.models[$('model').value];
    if (st) { g.fillStyle = '#dfe8f5'; g.fillRect(0, 0, w * st.traced / T, h); }
    if (S.hist.length) {
      var mx = Math.max.apply(null, S.hist) || 1;
      g.fillStyle = '#d9822b';
      S.hist.forEach(function (n, i) { if (n) { var bh = 4 + (h - 8) * n / mx; g.fillRect(i * w / S.hist.length, h - bh, Math.max(1, w / S.hist.length - 0.5), bh); } });
    }
    g.fillStyle = '#b3261e';
    S.matches.forEach(function (m) { g.fillRect(w * m.start / T, 0, 2, 8); });
    if (S.win) { g.strokeStyle = '#2a5db0'; g.lineWidth = 2; g.strokeRect(w * S.pos / T, 1, Math.max(3, w * (Math.min(S.win.to, S.pos + 3000) - S.pos) / T), h - 2); }
  }

  // ---- line plot and tracks ---------------------------------------------------------------------------------
  function loadPlot() {
    var p = params(), from = S.pos, to = Math.min(S.length, S.pos + PLOT);
    if (to <= from) return;
    var key = [p.model, p.name, from, to, S.version].join(':');
    api('/api/lines?' + q({ model: p.model, name: p.name, from: from, to: to })).then(function (d) {
      drawPlot(d, f16(d.values_f16));
      $('plot').dataset.shown = key;
    }, function () {});
    api('/api/tracks?' + q({ model: p.model, from: from, to: to })).then(drawTracks, function () {});
  }
  function drawPlot(d, v) {
    var c = $('plot'), w = c.width = c.clientWidth, h = c.height, g = c.getContext('2d');
    var n = d.to - d.from, k = d.units.length, th = parseFloat($('threshold').value), lo = -1, hi = 1;
    if (d.shown_label.indexOf('gate') >= 0 || /^[ifoz]/.test(d.shown_label)) lo = 0;
    var x = function (t) { return 90 + (w - 94) * (t + 0.5) / n; }, y = function (val) { return 6 + (h - 30) * (hi - Math.max(lo, Math.min(hi, val))) / (hi - lo); };
    g.clearRect(0, 0, w, h);
    var on = {}; S.selUnits.forEach(function (u) { on[u] = 1; });
    for (var pass = 0; pass < 2; pass++) {
      for (var u = 0; u < k; u++) {
        if (!!on[d.units[u]] !== (pass === 1)) continue;
        g.strokeStyle = pass ? 'hsla(' + (d.units[u] * 47 % 360) + ',70%,40%,0.9)' : 'rgba(90,90,90,0.18)';
        g.lineWidth = pass ? 1.6 : 1;
        g.beginPath();
        for (var t = 0; t < n; t++) { var val = v[t * k + u]; if (t) g.lineTo(x(t), y(val)); else g.moveTo(x(t), y(val)); }
        g.stroke();
      }
    }
    g.strokeStyle = '#b3261e'; g.setLineDash([4, 3]); g.beginPath(); g.moveTo(90, y(th)); g.lineTo(w, y(th)); g.stroke(); g.setLineDash([]);
    g.fillStyle = '#444'; g.font = '10px monospace';
    g.fillText(String(hi), 2, 12); g.fillText(String(lo), 2, h - 26); g.fillText(th.toFixed(2), 2, y(th) + 3);
    var text = Array.from(S.win.text.slice(d.from - S.win.from, d.to - S.win.from));
    if (S.sel) { g.fillStyle = 'rgba(42,93,176,0.12)'; g.fillRect(x(S.sel.from - d.from) - (w - 94) / n / 2, 0, (w - 94) * (S.sel.to - S.sel.from) / n, h - 20); }
    if ((w - 94) / n >= 5) text.forEach(function (ch, t) { g.fillText(ch === '\n' ? '\u21b5' : ch, x(t) - 3, h - 8); });
  }
  function drawTracks(d) {
    var c = $('tracks'), rows = d.tracks.length, rh = 16, w = c.width = c.clientWidth, n = d.to - d.from;
    c.height = rows * rh + 4;
    var g = c.getContext('2d'), cw = (w - 94) / n;
    g.clearRect(0, 0, w, c.height); g.font = '10px sans-serif';
    d.tracks.forEach(function (tr, r) {
      var top = 2 + r * rh;
      if (tr.kind === 'labels') {
        Array.from(tr.text).forEach(function (ch, t) { if (ch !== ' ') { g.fillStyle = 'hsl(' + (ch.charCodeAt(0) * 67 % 360) + ',60%,55%)'; g.fillRect(90 + t * cw, top, Math.max(1, cw), rh - 3); } });
      } else {
        var v = f16(tr.values_f16), mx = 0; for (var i = 0; i < v.length; i++) mx = Math.max(mx, Math.abs(v[i]));
        for (i = 0; i < v.length; i++) {
          var a = mx ? Math.abs(v[i]) / mx : 0;
          g.fillStyle = tr.kind === 'loss' ? 'rgba(179,38,30,' + a + ')' : 'rgba(42,93,176,' + a + ')';
          g.fillRect(90 + i * cw, top, Math.max(1, cw), rh - 3);
        }
      }
      g.fillStyle = '#333'; g.fillText(tr.name.replace('in_', '').replace('_', ' ').slice(0, 14), 2, top + 10);
    });
    c.dataset.shown = d.tracks.map(function (t) { return t.name; }).join(',');
  }

  // ---- selection, select and match -------------------------------------------------------------------------
  function boundary(node, off) {
    var box = $('view');
    if (node === box) { var kids = box.children; return off < kids.length ? +kids[off].dataset.s : S.win.to; }
    var el = node.nodeType === 3 ? node.parentNode : node;
    if (!el || !box.contains(el) || el.dataset.s === undefined) return null;
    if (node.nodeType === 3) return +el.dataset.s + Array.from(node.data.slice(0, off)).length;
    return +el.dataset.s + (off > 0 ? Array.from(el.textContent).length : 0);
  }
  function setSel(a, b) {
    S.sel = { from: a, to: b };
    $('sel-from').value = a; $('sel-to').value = b;
    var L = b - a;
    $('min-len').value = Math.max(1, L - Math.floor(L / 4)); $('max-len').value = L + Math.floor(L / 4);
    render();
  }
  function select() {
    var p = params(), a = parseInt($('sel-from').value, 10), b = parseInt($('sel-to').value, 10);
    S.sel = { from: a, to: b };
    return api('/api/corpus/select', { model: p.model, name: p.name, from: a, to: b, threshold: parseFloat($('threshold').value) }).then(function (d) {
      showError(''); S.selUnits = d.units;
      $('sel-units').innerHTML = d.units.length ? d.units.length + ' of ' + d.of + ' on: ' + d.units.slice(0, 80).map(function (u) {
        return '<span class="chip" data-u="' + u + '">' + u + '</span>'; }).join('') : 'no unit is on across the whole span: lower the threshold or select fewer characters';
      $('sel-units').dataset.count = d.units.length;
      Array.from($('sel-units').querySelectorAll('.chip')).forEach(function (c) {
        c.addEventListener('click', function () { $('unit').value = c.dataset.u; load(); });
      });
      render(); loadPlot();
    }, function () {});
  }
  function match() {
    var p = params();
    if (!S.selUnits.length) { showError('select a span and find the units on across it first'); return Promise.resolve(); }
    $('match-info').textContent = 'matching\u2026';
    return api('/api/corpus/match', { model: p.model, name: p.name, units: S.selUnits, threshold: parseFloat($('threshold').value),
      min_length: parseInt($('min-len').value, 10), max_length: parseInt($('max-len').value, 10),
      before: parseInt($('before').value, 10), after: parseInt($('after').value, 10), top: 50, bins: 400 }).then(function (d) {
      showError(''); S.matches = d.matches; S.hist = d.histogram;
      $('match-info').textContent = d.total.toLocaleString() + ' spans in ' + d.length.toLocaleString() + ' characters match at least one unit; best first:';
      $('matches').innerHTML = d.matches.map(function (m, i) {
        return '<li data-i="' + i + '">' + m.units + '/' + d.units.length + ' <code>' + esc(m.text.replace(/\n/g, '\u21b5')) + '</code> <span class="muted">@' + m.start + '</span></li>';
      }).join('');
      $('matches').dataset.count = d.matches.length;
      Array.from($('matches').children).forEach(function (li) {
        li.addEventListener('click', function () { go(Math.max(0, S.matches[+li.dataset.i].start - 200)); });
      });
      render();
    }, function () { $('match-info').textContent = ''; });
  }

  // ---- editing: typed characters become /api/edit splices ---------------------------------------------------
  function beforeInput(e) {
    e.preventDefault();
    var r = (e.getTargetRanges && e.getTargetRanges()[0]) || window.getSelection().getRangeAt(0);
    var a = boundary(r.startContainer, r.startOffset), b = boundary(r.endContainer, r.endOffset);
    if (a === null || b === null) return;
    var insert = '', t = e.inputType;
    if (t === 'insertText' || t === 'insertReplacementText') insert = e.data || (e.dataTransfer && e.dataTransfer.getData('text/plain')) || '';
    else if (t === 'insertParagraph' || t === 'insertLineBreak') insert = '\n';
    else if (t === 'insertFromPaste') insert = e.dataTransfer ? e.dataTransfer.getData('text/plain') : '';
    else if (t === 'deleteContentBackward' && a === b) a = Math.max(0, a - 1);
    else if (t === 'deleteContentForward' && a === b) b = Math.min(S.length, b + 1);
    else if (t.indexOf('delete') !== 0) return;
    edit(a, b, insert);
  }
  function edit(a, b, insert) {
    return api('/api/edit', { from: a, to: b, insert: insert, upto: Math.min(S.pos + AFTER, S.length + insert.length) }).then(function (d) {
      var m = d.models[$('model').value];
      $('edit-info').textContent = 'edit #' + d.version + ': re-traced from checkpoint ' + d.retraced_from.toLocaleString() +
        ', ' + m.recomputed.toLocaleString() + ' characters in ' + (1000 * m.seconds).toFixed(0) + ' ms; the rest follows in the background';
      $('edit-info').dataset.retracedFrom = d.retraced_from;
      S.length = d.length; S.matches = []; S.hist = [];
      var caret = a + Array.from(insert).length;
      return load().then(function () { placeCaret(caret); poll(); });
    }, function () {});
  }
  function placeCaret(pos) {
    var kids = $('view').children;
    for (var i = kids.length - 1; i >= 0; i--) {
      var s = +kids[i].dataset.s;
      if (s <= pos) {
        var node = kids[i].firstChild, off = Math.min(pos - s, node ? node.length : 0);
        var r = document.createRange(); r.setStart(node || kids[i], off); r.collapse(true);
        var sel = window.getSelection(); sel.removeAllRanges(); sel.addRange(r); return;
      }
    }
  }

  // ---- status ------------------------------------------------------------------------------------------------
  var polling = false;
  function poll() {
    if (polling) return; polling = true;
    (function tick() {
      api('/api/status').then(function (st) {
        S.status = st; S.length = st.length;
        var m = st.models[$('model').value];
        $('status').textContent = st.complete ? st.length.toLocaleString() + ' characters, all traced' + (m.cache_hit ? ' (from the cache)' : ' in ' + m.trace_seconds.toFixed(1) + ' s') :
          'tracing ' + m.traced.toLocaleString() + ' of ' + st.length.toLocaleString() + ' characters (' + Math.floor(100 * m.traced / st.length) + '%)';
        document.body.dataset.complete = st.complete ? '1' : '';
        drawMinimap();
        if (!st.complete) setTimeout(tick, 500); else polling = false;
      }, function () { polling = false; });
    })();
  }

  function start() {
    Promise.all([api('/api/models'), api('/api/status')]).then(function (r) {
      var info = r[0], st = r[1]; S.info = info; S.status = st; S.length = st.length;
      $('model').innerHTML = info.models.map(function (m) { return '<option>' + esc(m.key) + '</option>'; }).join('');
      var names = function () {
        var m = info.models.filter(function (x) { return x.key === $('model').value; })[0];
        $('name').innerHTML = m.activations.map(function (a) { return '<option' + (a === m.default_activation ? ' selected' : '') + '>' + a + '</option>'; }).join('');
        $('unit').max = m.size - 1;
      };
      names();
      $('model').addEventListener('change', function () { names(); load(); });
      $('name').addEventListener('change', load);
      $('unit').addEventListener('input', load);
      $('goto').addEventListener('change', function () { go(parseInt($('goto').value, 10) || 0); });
      $('view').addEventListener('wheel', function (e) { e.preventDefault(); scrollLines(e.deltaY > 0 ? 3 : -3); }, { passive: false });
      $('view').addEventListener('keydown', function (e) {
        if (e.key === 'PageDown') { e.preventDefault(); scrollLines(20); }
        else if (e.key === 'PageUp') { e.preventDefault(); scrollLines(-20); }
        else if (e.key === 'End' && e.ctrlKey) { e.preventDefault(); go(S.length - 1500); }
        else if (e.key === 'Home' && e.ctrlKey) { e.preventDefault(); go(0); }
      });
      $('view').addEventListener('beforeinput', beforeInput);
      $('view').addEventListener('mouseup', function () {
        var s = window.getSelection();
        if (s && !s.isCollapsed && s.rangeCount) {
          var r = s.getRangeAt(0), a = boundary(r.startContainer, r.startOffset), b = boundary(r.endContainer, r.endOffset);
          if (a !== null && b !== null && b > a) setSel(a, b);
        }
      });
      $('minimap').addEventListener('click', function (e) {
        var rect = $('minimap').getBoundingClientRect();
        go(S.length * (e.clientX - rect.left) / rect.width);
      });
      $('select-btn').addEventListener('click', select);
      $('match-btn').addEventListener('click', match);
      $('threshold').addEventListener('change', function () { loadPlot(); });
      load(); poll();
      document.body.dataset.ready = '1';
    }, function () {});
  }
  window.rnnlensCorpus = { go: go, edit: edit, state: S };
  document.addEventListener('DOMContentLoaded', start);
})();
