// The rnnlens explorer page: vanilla JS over the JSON API (docs/explorer.md). No build step, nothing
// loaded from the network. Positions are code points of the text, as on the server.
'use strict';
(function () {
  var $ = function (id) { return document.getElementById(id); };
  var state = { info: null, panels: [], active: 0, sel: null, matches: [], stripAt: null, strip: null, textTimer: null, seq: 0 };
  var CODES = '0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ';
  var PROB_STEPS = 11;  // rnnlens.render.colours.PROBABILITY

  function esc(s) { return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;'); }
  // as rnnlens.render.html: control characters show as their Unicode pictures, one code point each
  function shown(c) {
    var n = c.codePointAt(0);
    if (n === 13) return '\u2190';  // a carriage return: common fonts lack the control picture
    if (n < 32 && c !== '\n' && c !== '\t') return String.fromCharCode(0x2400 + n);
    return n === 0x7f ? '\u2421' : c;
  }
  function stripChar(c, prediction) {
    if (c === '\n') return '\u21b5';
    if (c === '\t') return '\u21e5';
    if (c === ' ' && prediction) return '\u2423';
    return shown(c);
  }
  function named(c) { return c === ' ' ? '\u2423 (space)' : c === '\n' ? '\u21b5 (newline)' : c === '\t' ? '\u21e5 (tab)' : shown(c); }
  function num(x) { return (x < 0 ? '' : '+') + x.toFixed(3); }

  function showError(message) {
    var box = $('error');
    box.textContent = message; box.hidden = !message;
  }

  function api(path, body) {
    var options = body === undefined ? {} : { method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body) };
    return fetch(path, options).then(function (r) {
      return r.json().then(function (data) {
        if (!r.ok) throw new Error(data.error || ('HTTP ' + r.status));
        return data;
      });
    }).catch(function (e) { showError(e.message); throw e; });
  }

  function text() { return $('text').value; }
  function model(key) { return state.info.models.filter(function (m) { return m.key === key; })[0]; }

  // ---- panels: one per model, the text coloured by one unit --------------------------------------

  function makePanel(m, index) {
    var el = document.createElement('div');
    el.className = 'card panel';
    var options = m.activations.map(function (a) {
      return '<option' + (a === m.default_activation ? ' selected' : '') + '>' + a + '</option>';
    }).join('');
    el.innerHTML = '<div class="controls"><span class="model" title="' + esc(m.run) + '">' + esc(m.key) + '</span>' +
      '<span class="muted">' + m.cell.toUpperCase() + ' ' + m.layers + '\u00d7' + m.size + '</span>' +
      '<select class="name" aria-label="activation">' + options + '</select>' +
      '<label>unit <input class="unit" type="number" min="0" max="' + (m.size - 1) + '" value="0"></label>' +
      '<span class="busy"></span></div>' +
      '<div class="edit-bar"><span class="muted">this unit:</span>' +
      '<button class="secondary" data-mode="ablate" title="set the unit to 0 at every character and read the text again">ablate</button>' +
      '<button class="secondary" data-mode="clamp_low" title="hold the unit at its minimum over the text">clamp low</button>' +
      '<button class="secondary" data-mode="clamp_high" title="hold the unit at its maximum over the text">clamp high</button>' +
      '<button class="secondary reset" hidden>reset</button>' +
      '<label class="by-change" hidden><input type="checkbox" checked> colour by the change in loss</label>' +
      '<span class="edit-info"></span></div>' +
      '<div class="rl"><div class="legend"><span class="label"></span><span class="scale"></span></div>' +
      '<div class="rl-text"></div></div>';
    var panel = { index: index, model: m.key, el: el, data: null, text: '', chars: [] };
    panel.nameEl = el.querySelector('select.name');
    panel.unitEl = el.querySelector('input.unit');
    panel.box = el.querySelector('.rl-text');
    panel.edit = null;    // the unit ablated or clamped: {name, unit, mode, value} as the server resolved it
    panel.change = null;  // /api/intervene's answer: the loss change per character and its colours
    Array.from(el.querySelectorAll('.edit-bar button[data-mode]')).forEach(function (b) {
      b.addEventListener('click', function () {
        intervene(panel, { name: panel.nameEl.value, unit: parseInt(panel.unitEl.value, 10), mode: b.dataset.mode });
      });
    });
    el.querySelector('.edit-bar .reset').addEventListener('click', function () { resetEdit(panel); });
    el.querySelector('.by-change input').addEventListener('change', function () { if (panel.data) render(panel); });
    panel.nameEl.addEventListener('change', function () { panel.touched = true; loadTrace(panel); });
    panel.unitEl.addEventListener('input', function () { panel.touched = true; loadTrace(panel); });
    panel.box.addEventListener('mousemove', function (e) { hover(panel, e); });
    panel.box.addEventListener('mouseleave', function () { $('tip').hidden = true; });
    panel.box.addEventListener('mouseup', function (e) { pointerUp(panel, e); });
    el.addEventListener('focusin', function () { activate(panel.index); });
    return panel;
  }

  function setUnit(panel, name, unit) {
    panel.nameEl.value = name;
    panel.unitEl.value = unit;
    return loadTrace(panel);
  }

  function loadTrace(panel) {
    var unit = parseInt(panel.unitEl.value, 10);
    if (isNaN(unit)) return Promise.resolve();
    var body = { text: text(), model: panel.model, name: panel.nameEl.value, unit: unit };
    if (panel.edit) body.intervention = panel.edit;
    var key = JSON.stringify(body);
    if (key === panel.wanted) return Promise.resolve();  // already shown, or on its way
    panel.wanted = key;
    var ticket = ++state.seq;
    panel.ticket = ticket;
    panel.el.querySelector('.busy').textContent = 'reading\u2026';
    return api('/api/trace', body).then(function (data) {
      if (panel.ticket !== ticket) return;  // a newer request is on its way
      showError('');
      panel.data = data; panel.text = body.text; panel.chars = Array.from(body.text);
      panel.el.querySelector('.busy').textContent = data.replaced.length ?
        'not in the vocabulary, read as a space: ' + data.replaced.map(named).join(' ') : '';
      render(panel);
      if (state.strip && state.strip.panel === panel) paintStrip();
      markUnitList();
    }, function () { panel.wanted = null; panel.el.querySelector('.busy').textContent = ''; });
  }

  function legend(panel) {
    var d = panel.data, prefix = d.scale.class_prefix, steps = d.scale.steps, bar = '';
    for (var i = 0; i < steps; i += 2) bar += '<i class="' + prefix + i + '"></i>';
    var lo = d.scale.lo < 0 ? '\u2212' + Math.abs(d.scale.lo) : String(d.scale.lo);
    var hi = d.scale.lo < 0 ? '+' + d.scale.hi : String(d.scale.hi);
    panel.el.querySelector('.label').textContent = d.label;
    panel.el.querySelector('.scale').innerHTML = '<span class="rl-scale">' + esc(d.shown_label) + ' ' + lo +
      '<span class="bar">' + bar + '</span>' + hi + '</span>';
  }

  // Runs of characters of one colour level (and one mark), every newline its own <u>, as the static views.
  // the loss change of the panel's edit, when it belongs to the text on screen
  function hasChange(panel) { return !!(panel.edit && panel.change && panel.change.text === panel.text); }

  function byChange(panel) { return hasChange(panel) && panel.el.querySelector('.by-change input').checked; }

  function render(panel) {
    var d = panel.data, chars = panel.chars, codes = d.levels, prefix = d.scale.class_prefix;
    if (byChange(panel)) { codes = panel.change.change_levels; prefix = panel.change.change_scale.class_prefix; }
    var marks = markArray(chars.length), out = [], s = 0;
    for (var t = 1; t <= chars.length; t++) {
      if (t < chars.length && codes[t] === codes[s] && marks[t] === marks[s] && chars[t] !== '\n' && chars[s] !== '\n') continue;
      var cls = prefix + CODES.indexOf(codes[s]) + (marks[s] ? ' ' + marks[s] : '');
      if (chars[s] === '\n') out.push('<u class="' + cls + '" data-s="' + s + '">\n</u>');
      else out.push('<i class="' + cls + '" data-s="' + s + '">' + esc(chars.slice(s, t).map(shown).join('')) + '</i>');
      s = t;
    }
    panel.box.innerHTML = out.join('');
    legend(panel);
    if (byChange(panel)) {  // the legend of the loss change: red harder, blue easier
      var sc = panel.change.change_scale, bar = '';
      for (var i = 0; i < sc.steps; i += 2) bar += '<i class="' + sc.class_prefix + (sc.steps - 1 - i) + '"></i>';
      panel.el.querySelector('.label').textContent = 'change in loss, ' + panel.edit.name + ' unit ' + panel.edit.unit +
        ' ' + (panel.edit.mode === 'ablate' ? 'ablated' : 'clamped');
      panel.el.querySelector('.scale').innerHTML = '<span class="rl-scale">easier −' + sc.hi +
        '<span class="bar">' + bar + '</span>+' + sc.hi + ' nats harder</span>';
    }
    // what is on screen, not what was asked for: after a reset the edited trace stays until the clean one lands
    var shownEdit = byChange(panel) ? panel.edit.mode : d.intervention ? (d.intervention.mode === 'ablate' ? 'ablate' : 'clamp') : '';
    panel.el.dataset.edit = shownEdit ? shownEdit + ':' + (byChange(panel) ? 'change' : 'unit') : '';
    panel.el.dataset.shown = d.name + ':' + d.unit + ':' + chars.length;  // what is on screen (the tests wait for it)
  }

  function markArray(n) {
    var marks = new Array(n).fill('');
    state.matches.forEach(function (m) { for (var i = m.start; i < Math.min(m.end, n); i++) marks[i] = 'mk'; });
    if (state.sel) for (var i = state.sel.start; i < Math.min(state.sel.end, n); i++) marks[i] = 'sel';
    if (state.stripAt !== null && state.stripAt < n) marks[state.stripAt] = (marks[state.stripAt] + ' here').trim();
    return marks;
  }

  function renderAll() { state.panels.forEach(function (p) { if (p.data) render(p); }); }

  // the character index under the mouse: its run's start plus the offset inside the run
  function indexAt(panel, x, y) {
    var node, off, r;
    if (document.caretPositionFromPoint) { r = document.caretPositionFromPoint(x, y); if (r) { node = r.offsetNode; off = r.offset; } }
    else if (document.caretRangeFromPoint) { r = document.caretRangeFromPoint(x, y); if (r) { node = r.startContainer; off = r.startOffset; } }
    if (!node) return null;
    return position(panel, node, off, x, y);
  }

  function position(panel, node, off, x, y) {
    var el = node.nodeType === 3 ? node.parentNode : node;
    if (!el || !panel.box.contains(el) || el.dataset.s === undefined) return null;
    if (el.tagName === 'U') return +el.dataset.s;
    var before = node.nodeType === 3 ? Array.from(node.data.slice(0, off)).length : 0;
    if (x !== undefined && off > 0 && node.nodeType === 3) {  // the caret sits between characters: take the one under the mouse
      var rg = document.createRange(); rg.setStart(node, off - 1); rg.setEnd(node, off);
      var b = rg.getBoundingClientRect();
      if (x < b.right && y >= b.top && y <= b.bottom) before--;
    }
    var length = node.nodeType === 3 ? Array.from(node.data).length : 1;
    return +el.dataset.s + Math.max(0, Math.min(before, length - 1));
  }

  function hover(panel, e) {
    var tip = $('tip'), d = panel.data;
    if (!d) return;
    var i = indexAt(panel, e.clientX, e.clientY);
    if (i === null || i >= d.values.length) { tip.hidden = true; return; }
    var raw = d.values[i], value = d.transform ? Math[d.transform](raw) : raw;
    tip.textContent = named(panel.chars[i]) + '   #' + i + '\n' + d.shown_label + ' = ' + num(value) +
      (d.raw_label ? '   ' + d.raw_label + ' = ' + num(raw) : '') +
      (hasChange(panel) && panel.change.change[i] !== null ?
        '\nloss change predicting it = ' + num(panel.change.change[i]) + ' nats' : '');
    tip.hidden = false;
    var px = e.clientX + 14, py = e.clientY + 16;
    if (px + tip.offsetWidth > innerWidth - 4) px = e.clientX - tip.offsetWidth - 10;
    if (py + tip.offsetHeight > innerHeight - 4) py = e.clientY - tip.offsetHeight - 12;
    tip.style.left = px + 'px'; tip.style.top = py + 'px';
  }

  // a drag selects a span (LSTMVis select); a click shows the prediction strip there
  function pointerUp(panel, e) {
    activate(panel.index);
    var s = window.getSelection();
    if (s && !s.isCollapsed && s.rangeCount) {
      var r = s.getRangeAt(0);
      var a = boundary(panel, r.startContainer, r.startOffset), b = boundary(panel, r.endContainer, r.endOffset);
      if (a !== null && b !== null && b > a) { setSelection(a, b); return; }
    }
    var i = indexAt(panel, e.clientX, e.clientY);
    if (i !== null) loadStrip(panel, i);
  }

  // the text position of a range boundary (between characters), or null outside the panel's text
  function boundary(panel, node, off) {
    if (node === panel.box) {
      var kids = panel.box.children;
      return off < kids.length ? +kids[off].dataset.s : panel.chars.length;
    }
    var el = node.nodeType === 3 ? node.parentNode : node;
    if (!el || !panel.box.contains(el) || el.dataset.s === undefined) return null;
    if (node.nodeType === 3) return +el.dataset.s + Array.from(node.data.slice(0, off)).length;
    return +el.dataset.s + (off > 0 ? Array.from(el.textContent).length : 0);
  }

  function setSelection(start, end) {
    $('sel-start').value = start; $('sel-end').value = end;
    state.sel = { start: start, end: end };
    $('sel-span').textContent = JSON.stringify(text().slice(start, end)).slice(0, 60);
    renderAll();
  }

  function activate(index) {
    if (state.active === index) return;
    state.active = index;
    state.panels.forEach(function (p) { p.el.classList.toggle('active', p.index === index); });
    loadUnits();
    $('sample-model').textContent = state.panels[index].model;
  }

  // ---- ranked units --------------------------------------------------------------------------------

  function loadUnits() {
    var panel = state.panels[state.active], body = { text: text(), model: panel.model, top: 3 };
    $('units-model').textContent = panel.model;
    return api('/api/units', body).then(function (data) {
      if (body.text !== text()) return;
      var list = $('units');
      list.innerHTML = data.units.map(function (u, i) {
        return '<li data-i="' + i + '"><b>L' + u.layer + ' ' + esc(u.kind) + ' ' + u.unit + '</b><span>' +
          esc(u.feature) + ': ' + esc(u.why) + ablatedNote(u.ablated) + '</span></li>';
      }).join('');
      Array.from(list.children).forEach(function (li) {
        li.addEventListener('click', function () {
          var u = data.units[+li.dataset.i];
          panel.touched = true;
          setUnit(panel, u.name, u.unit);
        });
      });
      state.ranked = data.units;
      list.dataset.chars = Array.from(body.text).length;  // which text the list ranks (the tests wait for it)
      // the page opens on the unit that tracks a feature best, until someone picks one
      if (!panel.touched && data.units.length) { panel.touched = true; setUnit(panel, data.units[0].name, data.units[0].unit); }
      $('units-note').textContent = data.note || '';
      markUnitList();
    }, function () {});
  }

  // "ablated: +0.004 on the feature, +0.099 where it switches" (nats/char; + = harder without the unit)
  function ablatedNote(a) {
    if (!a) return '';
    function signed(x) { return (x >= 0 ? '+' : '\u2212') + Math.abs(x).toFixed(3); }
    var parts = [];
    if (a.change_on !== null) parts.push(signed(a.change_on) + ' on the feature');
    if (a.change_switch !== null) parts.push(signed(a.change_switch) + ' where it switches');
    if (!parts.length && a.change_all !== null) parts.push(signed(a.change_all) + ' overall');
    return parts.length ? '<em class="ablated" title="loss change, nats/char, when the unit is ablated">' +
      'ablated: ' + parts.join(', ') + '</em>' : '';
  }

  function markUnitList() {
    var panel = state.panels[state.active];
    Array.from($('units').children).forEach(function (li) {
      var u = (state.ranked || [])[+li.dataset.i];
      li.classList.toggle('on', !!u && u.name === panel.nameEl.value && String(u.unit) === panel.unitEl.value);
    });
  }

  // ---- select and match ------------------------------------------------------------------------------

  function selectAndMatch() {
    var panel = state.panels[state.active];
    var body = { text: text(), model: panel.model, name: panel.nameEl.value, start: parseInt($('sel-start').value, 10),
      end: parseInt($('sel-end').value, 10), threshold: parseFloat($('sel-threshold').value) };
    state.sel = { start: body.start, end: body.end };
    $('sel-span').textContent = JSON.stringify(body.text.slice(body.start, body.end)).slice(0, 60);
    $('matches').innerHTML = ''; $('sel-units').innerHTML = '';
    return api('/api/select', body).then(function (sel) {
      showError('');
      var box = $('sel-units');
      if (!sel.units.length) {
        box.innerHTML = '<span class="muted">no unit of ' + esc(sel.name) + ' is \u2265 ' + sel.threshold +
          ' across the whole span: lower the threshold or select fewer characters</span>';
        state.matches = []; renderAll();
        return;
      }
      box.innerHTML = '<span class="muted">' + sel.units.length + ' of ' + sel.of + ' on:</span>' +
        sel.units.slice(0, 60).map(function (u) { return '<span class="chip" data-u="' + u + '">' + u + '</span>'; }).join('') +
        (sel.units.length > 60 ? '<span class="muted">\u2026</span>' : '');
      Array.from(box.querySelectorAll('.chip')).forEach(function (c) {
        c.addEventListener('click', function () { setUnit(panel, sel.name, +c.dataset.u); });
      });
      return api('/api/match', Object.assign({}, body, { units: sel.units, top: 10 })).then(function (m) {
        state.matches = m.matches;
        var list = $('matches');
        list.innerHTML = m.matches.length ? m.matches.map(function (x, i) {
          return '<li data-i="' + i + '"><span class="score">' + Math.round(100 * x.score) + '%</span>' +
            '<code>' + esc(Array.from(x.text).map(function (c) { return stripChar(c, false); }).join('')) +
            '</code> <span class="muted">@' + x.start + '</span></li>';
        }).join('') : '<li class="muted">no other place where at least half of them are on</li>';
        Array.from(list.querySelectorAll('li[data-i]')).forEach(function (li) {
          li.addEventListener('click', function () { reveal(panel, m.matches[+li.dataset.i].start); });
        });
        renderAll();
      });
    }, function () {});
  }

  function reveal(panel, start) {
    var runs = panel.box.children, target = null;
    for (var i = 0; i < runs.length; i++) { if (+runs[i].dataset.s <= start) target = runs[i]; else break; }
    if (target) panel.box.scrollTop = target.offsetTop - panel.box.offsetTop - 40;
  }

  // ---- prediction strip ---------------------------------------------------------------------------------

  function loadStrip(panel, position) {
    state.stripAt = position;
    var body = { text: text(), model: panel.model, position: position, before: 14, after: 14, top: 5 };
    if (panel.edit) body.intervention = panel.edit;
    return api('/api/predict', body).then(function (d) { drawStrip(panel, position, d); }, function () {});
  }

  function drawStrip(panel, position, d) {
    state.strip = { panel: panel, position: position, d: d };
    paintStrip();
    renderAll();
  }

  // The strip's characters take their colours from the panel's trace, which may arrive after the strip does
  // (a reset fetches both at once): loadTrace paints the strip again when its trace lands.
  function paintStrip() {
    var panel = state.strip.panel, position = state.strip.position, d = state.strip.d;
    var levels = panel.data ? panel.data.levels : '', prefix = panel.data ? panel.data.scale.class_prefix : 'd';
    var cols = d.columns.map(function (c) {
      var cells = '<b class="' + prefix + (levels ? CODES.indexOf(levels[c.position]) : 16) + '">' + esc(stripChar(c.char, false)) + '</b>';
      c.top.forEach(function (p) {
        var lvl = Math.round(Math.min(1, Math.max(0, p.p)) * (PROB_STEPS - 1));
        cells += '<i class="p' + lvl + (p.char === c.next ? ' t' : '') + '" title="' + (100 * p.p).toFixed(1) + '%">' +
          esc(stripChar(p.char, true)) + '</i>';
      });
      return '<span class="' + (c.position === position ? 'here' : '') + '" title="#' + c.position +
        (c.next !== null && c.next_p !== null ? ' \u2014 true next ' + named(c.next) + ' ' + (100 * c.next_p).toFixed(1) + '%' : '') +
        '">' + cells + '</span>';
    }).join('');
    $('strip').innerHTML = '<div class="rl-cols">' + cols + '</div>';
    var here = d.columns.filter(function (c) { return c.position === position; })[0];
    $('strip-info').textContent = panel.model + (d.intervention ? ' (' + d.intervention.label + ')' : '') +
      ', after #' + position + ' ' + named(here.char) + ': ' +
      here.top.map(function (p) { return named(p.char) + ' ' + (100 * p.p).toFixed(1) + '%'; }).join(', ') +
      ' \u00b7 underlined: what came next';
    $('strip').dataset.edit = d.intervention ? d.intervention.mode : '';
  }

  // ---- sampling -------------------------------------------------------------------------------------------

  function sample() {
    var panel = state.panels[state.active];
    var body = { model: panel.model, prime: $('prime').value, temperature: parseFloat($('temperature').value),
      length: parseInt($('sample-length').value, 10), seed: Math.floor(Math.random() * 1e9) };
    state.sampled = { prime: body.prime, temperature: body.temperature, length: body.length, seed: body.seed };
    if (panel.edit) body.intervention = panel.edit;
    $('sample-out').textContent = 'sampling\u2026';
    return api('/api/sample', body).then(drawSample, function () { $('sample-out').textContent = ''; });
  }

  function drawSample(d) {
    showError('');
    var out = $('sample-out');
    out.innerHTML = (d.intervention ? '<span class="muted small">' + esc(d.intervention.label) + ', seed ' + d.seed +
      '</span>\n' : '') + '<span class="prime">' + esc(d.prime) + '</span>' + esc(d.text);
    out.dataset.full = d.prime + d.text;
    out.dataset.edit = d.intervention ? d.intervention.mode : '';
  }

  // ---- interventions: the shown unit ablated or clamped, the text read again ----------------------------

  function intervene(panel, spec) {
    var body = { text: text(), model: panel.model, intervention: spec, show_name: panel.nameEl.value,
      show_unit: parseInt(panel.unitEl.value, 10), before: 14, after: 14, top: 5 };
    if (state.stripAt !== null) body.position = state.stripAt;
    if (state.sampled && state.panels[state.active] === panel) body.sample = state.sampled;
    var info = panel.el.querySelector('.edit-info');
    info.textContent = 'reading with the edit\u2026';
    return api('/api/intervene', body).then(function (d) {
      if (body.text !== text()) return;
      showError('');
      // later requests send the resolved edit: a clamp keeps the value found on this text
      panel.edit = { name: d.intervention.name, unit: d.intervention.unit,
        mode: d.intervention.mode === 'ablate' ? 'ablate' : 'clamp', value: d.intervention.value };
      panel.change = d; d.text = body.text;
      panel.data = d.trace; panel.text = body.text; panel.chars = Array.from(body.text);
      panel.wanted = JSON.stringify({ text: body.text, model: panel.model, name: d.trace.name, unit: d.trace.unit,
        intervention: panel.edit });
      var loss = d.loss;
      info.innerHTML = '<b>' + esc(d.intervention.label) + '</b>: loss ' + loss.as_trained.toFixed(3) + ' \u2192 ' +
        loss.edited.toFixed(3) + ' nats/char (<b class="' + (loss.change > 0 ? 'worse' : 'better') + '">' +
        num(loss.change) + '</b>) over ' + d.chars.toLocaleString() + ' predicted characters';
      panel.el.querySelector('.reset').hidden = false;
      panel.el.querySelector('.by-change').hidden = false;
      render(panel);
      if (d.strip) drawStrip(panel, body.position, d.strip);
      if (d.sample) drawSample(d.sample);
    }, function () { info.textContent = ''; });
  }

  function resetEdit(panel) {
    panel.edit = null; panel.change = null; panel.wanted = null;
    panel.el.querySelector('.edit-info').textContent = '';
    panel.el.querySelector('.reset').hidden = true;
    panel.el.querySelector('.by-change').hidden = true;
    var redraw = [loadTrace(panel)];
    if (state.stripAt !== null) redraw.push(loadStrip(panel, state.stripAt));
    if (state.sampled && state.panels[state.active] === panel) {
      redraw.push(api('/api/sample', Object.assign({ model: panel.model }, state.sampled)).then(drawSample, function () {}));
    }
    return Promise.all(redraw);
  }

  // ---- wiring ---------------------------------------------------------------------------------------------

  function textChanged() {
    var n = Array.from(text()).length;
    $('text-info').textContent = n.toLocaleString() + ' characters' + (state.info.text_note ? ' \u00b7 ' + state.info.text_note : '');
    state.sel = null; state.matches = []; state.stripAt = null; state.strip = null;
    $('matches').innerHTML = ''; $('sel-units').innerHTML = '';
    clearTimeout(state.textTimer);
    state.textTimer = setTimeout(function () {
      if (!text()) return;
      state.panels.forEach(function (p) { if (p.edit) intervene(p, p.edit); else loadTrace(p); });
      loadUnits();
    }, 250);
  }

  function start() {
    api('/api/models').then(function (info) {
      state.info = info;
      $('models-info').textContent = info.models.map(function (m) {
        return m.key + ': ' + m.cell.toUpperCase() + ' ' + m.layers + '\u00d7' + m.size + ', ' + m.parameters.toLocaleString() + ' parameters';
      }).join(' \u00b7 ');
      var box = $('panels');
      info.models.forEach(function (m, i) { var p = makePanel(m, i); state.panels.push(p); box.appendChild(p.el); });
      state.panels[0].el.classList.add('active');
      $('sample-model').textContent = state.panels[0].model;
      $('text').value = info.text;
      $('text').addEventListener('input', textChanged);
      $('select-btn').addEventListener('click', selectAndMatch);
      $('sample-btn').addEventListener('click', sample);
      $('sample-use').addEventListener('click', function () {
        var full = $('sample-out').dataset.full;
        if (full) { $('text').value = full; textChanged(); }
      });
      $('temperature').addEventListener('input', function () {
        $('temperature-out').textContent = parseFloat($('temperature').value).toFixed(2);
      });
      ['sel-start', 'sel-end'].forEach(function (id) {
        $(id).addEventListener('change', function () {
          setSelection(parseInt($('sel-start').value, 10) || 0, parseInt($('sel-end').value, 10) || 1);
        });
      });
      textChanged();
      document.body.dataset.ready = '1';
    }, function () {});
  }

  document.addEventListener('DOMContentLoaded', start);
})();
