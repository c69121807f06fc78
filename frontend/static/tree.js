// The tree inspector's view: a Canvas 2D drawing of the compact JSON that frontend/tree_view.py
// makes (columns of the drawn nodes), with thumbnails cut from one atlas image per tree.
// Runs as the js_on_load of a gr.HTML whose template never changes (so Gradio's DOM update is a
// no-op): `element`, `props`, `trigger` and `watch` come from Gradio. Every interaction (fold,
// filter, zoom, pan, selection, overlay) is a redraw of what the viewport shows.
// Test hook: element.tgTree {pos(id), state(), fold(id), select(id)} and data-* timestamps.
const LEAF = 1, SDE = 2, BRANCH = 4, NEW = 8, FOLD = 16;
const FRAME = 3, SELECTED = '#f59e0b', NEW_BRANCH = '#16a34a', BRANCHED = '#7c3aed';
const WINDOW_BAND = '#eef2ff', BEST_PATH = 'rgba(252, 211, 77, 0.55)', GREY = '#9aa0a6';
const DIVERGING = [[-1, [178, 24, 43]], [-0.5, [239, 138, 98]], [0, [196, 196, 196]],
  [0.5, [103, 169, 207]], [1, [33, 102, 172]]];
const SEQUENTIAL = [[0, [68, 1, 84]], [0.25, [59, 82, 139]], [0.5, [33, 145, 140]],
  [0.75, [94, 201, 98]], [1, [253, 231, 37]]];
const MIN_ZOOM = 0.02, MAX_ZOOM = 4, STAGE_MAX = 760;

const lerp = (stops, x) => {
  x = Math.min(Math.max(x, stops[0][0]), stops[stops.length - 1][0]);
  for (let i = 1; i < stops.length; i++) {
    const [x0, c0] = stops[i - 1], [x1, c1] = stops[i];
    if (x <= x1) {
      const f = x1 === x0 ? 0 : (x - x0) / (x1 - x0);
      return `rgb(${c0.map((a, j) => Math.round(a + (c1[j] - a) * f)).join(',')})`;
    }
  }
  return `rgb(${stops[stops.length - 1][1].join(',')})`;
};
// A value that rounds to zero shows without a sign ("0.00", never "-0.00" or "+0.00").
const fmt = (v, d = 3, signed = false) => {
  if (v === null || v === undefined) return 'n/a';
  const text = Number(v).toFixed(d);
  if (Number(text) === 0) return (0).toFixed(d);
  return (signed && v > 0 ? '+' : '') + text;
};
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => (
  {'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;'}[c]));

element.classList.add('tg-tree-view');
const $ = (sel) => element.querySelector(sel);
const canvas = $('canvas.tg-tv-canvas');
const stage = $('.tg-tv-stage');
const ctx = canvas.getContext('2d');

let V = null;            // the view (frontend/tree_view.py)
let N = null;            // its node columns
let kids = [];           // children positions per node
let byRow = [];          // per row: positions sorted by x
let hidden = null;       // Uint8Array: under a folded node
let keep = null;         // the filter's kept nodes (null: all)
let folded = new Set();  // positions
let filter = 'all';
let overlay = true;
let z = 1, ox = 0, oy = 0, fitted = true;
let selected = -1, cursor = -1;
let bitmaps = [];        // per atlas: ImageBitmap | HTMLImageElement | null
let tilesDrawn = 0, pending = false, shownTree = null, atlasToken = 0;

const size = (i) => ((N.f[i] & FOLD) ? V.geometry.node : V.geometry.leaf);
const rowY = (r) => V.row_y[r];  // the server places rows: a branch never moves the training tree's
const shown = (i) => !hidden[i] && (overlay || !(N.f[i] & BRANCH));
const now = () => performance.now().toFixed(1);

function index(view) {
  V = view; N = view.nodes;
  const n = N.id.length;
  kids = Array.from({length: n}, () => []);
  for (let i = 0; i < n; i++) if (N.p[i] >= 0) kids[N.p[i]].push(i);
  byRow = Array.from({length: view.rows.length}, () => []);
  for (let i = 0; i < n; i++) byRow[N.r[i]].push(i);
  byRow.forEach((row) => row.sort((a, b) => N.x[a] - N.x[b]));
  hidden = new Uint8Array(n);
}

function applyFold() {
  // Parents come before their children in the columns (a pre-order walk).
  for (let i = 0; i < N.id.length; i++) {
    const p = N.p[i];
    hidden[i] = p >= 0 && (folded.has(p) || hidden[p]) ? 1 : 0;
  }
  element.dataset.folded = String(folded.size);
}

function applyFilter() {
  element.querySelectorAll('button[data-filter]').forEach(
    (b) => b.classList.toggle('tg-on', b.dataset.filter === filter));
  element.dataset.filter = filter;
  if (filter === 'all') { keep = null; return; }
  keep = new Set();
  for (let i of V[filter] || []) { while (i >= 0 && !keep.has(i)) { keep.add(i); i = N.p[i]; } }
}

function resize() {
  const w = stage.clientWidth;
  if (!w) { pending = true; return false; }
  pending = false;
  const h = Math.max(160, Math.min(STAGE_MAX, Math.ceil(V.height * z) + 8));
  const dpr = window.devicePixelRatio || 1;
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
    canvas.width = Math.round(w * dpr); canvas.height = Math.round(h * dpr);
    canvas.style.width = w + 'px'; canvas.style.height = h + 'px';
  }
  return true;
}

function fit() {
  const w = stage.clientWidth; if (!w) { pending = true; return; }
  // Fitted, but never so small that a node is a dot: a wide tree then opens on its root.
  z = Math.max(0.2, Math.min(1, (w - 4) / V.width));
  fitted = true; oy = 0;
  const root = V.roots.length ? N.x[V.roots[0]] : 0;
  ox = V.width * z <= w ? 0 : w / 2 - root * z;
  clampPan();
}

function clampPan() {
  const w = canvas.clientWidth || stage.clientWidth, h = canvas.clientHeight;
  ox = Math.min(w / 2, Math.max(ox, w / 2 - V.width * z));
  oy = Math.min(0, Math.max(oy, Math.min(0, h - V.height * z - 8)));
}

function setZoom(next, cx, cy) {
  next = Math.min(MAX_ZOOM, Math.max(MIN_ZOOM, next));
  const wx = (cx - ox) / z, wy = (cy - oy) / z;
  z = next; fitted = false; resize();
  ox = cx - wx * z; oy = cy - wy * z; clampPan(); draw();
}

function edgeStyle(i) {
  const f = N.f[i], a = N.ad[i], scale = V.scales.advantage || 1;
  if ((f & SDE) && a !== null) {
    return [lerp(DIVERGING, a / scale), 1.5 + 3.5 * Math.min(1, Math.abs(a) / scale), false];
  }
  return [GREY, 1.5, !(f & SDE)];
}

function edgePath(p, i) {
  const x1 = N.x[p], y1 = rowY(N.r[p]) + size(p) / 2;
  const x2 = N.x[i], y2 = rowY(N.r[i]) - size(i) / 2 - (kids[i].length ? 0 : FRAME);
  const ym = (y1 + y2) / 2;
  ctx.moveTo(x1, y1); ctx.bezierCurveTo(x1, ym, x2, ym, x2, y2);
}

function draw() {
  if (!V || !resize()) return;
  const dpr = window.devicePixelRatio || 1;
  const W = canvas.width / dpr, H = canvas.height / dpr;
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, W, H);
  ctx.setTransform(dpr * z, 0, 0, dpr * z, dpr * ox, dpr * oy);
  // The viewport in tree coordinates, with a node's room around it: cull the rest.
  const m = V.geometry.node;
  const left = -ox / z - m, right = (W - ox) / z + m, top = -oy / z - m, bottom = (H - oy) / z + m;
  const inView = (i) => N.x[i] >= left && N.x[i] <= right;
  const rowIn = (r) => rowY(r) >= top && rowY(r) <= bottom;
  if (V.window) {
    const y0 = rowY(V.window[0]) - V.geometry.node / 2 - 8;
    const y1 = rowY(V.window[1]) + V.geometry.node / 2 + 8;
    ctx.fillStyle = WINDOW_BAND; ctx.fillRect(-ox / z, y0, W / z, y1 - y0);
  }
  ctx.lineCap = 'round';
  // "Which branch won": a gold band from the root to the best leaf.
  ctx.strokeStyle = BEST_PATH; ctx.lineWidth = 10; ctx.setLineDash([]);
  ctx.beginPath();
  for (let j = 1; j < V.best_path.length; j++) {
    const i = V.best_path[j];
    if (shown(i)) edgePath(V.best_path[j - 1], i);
  }
  ctx.stroke();
  const n = N.id.length, dimmed = [];
  for (let i = 0; i < n; i++) {
    const p = N.p[i];
    if (p < 0 || !shown(i)) continue;
    if (Math.max(N.x[p], N.x[i]) < left || Math.min(N.x[p], N.x[i]) > right) continue;
    if (!rowIn(N.r[i]) && !rowIn(N.r[p])) continue;
    if (keep && !keep.has(i)) { dimmed.push(i); continue; }
    const [colour, width, dashed] = edgeStyle(i);
    ctx.strokeStyle = colour; ctx.lineWidth = width; ctx.setLineDash(dashed ? [5, 4] : []);
    ctx.beginPath(); edgePath(p, i); ctx.stroke();
  }
  ctx.globalAlpha = 0.15;
  for (const i of dimmed) {
    const [colour, width, dashed] = edgeStyle(i);
    ctx.strokeStyle = colour; ctx.lineWidth = width; ctx.setLineDash(dashed ? [5, 4] : []);
    ctx.beginPath(); edgePath(N.p[i], i); ctx.stroke();
  }
  ctx.globalAlpha = 1; ctx.setLineDash([]);
  // Step counts on collapsed ODE chains (and multi-step SDE edges) of small trees.
  if (n <= 200 && z >= 0.5) {
    ctx.font = '9px ui-sans-serif, system-ui, sans-serif'; ctx.textAlign = 'center';
    ctx.lineWidth = 3; ctx.strokeStyle = '#fff'; ctx.fillStyle = '#5f6368';
    for (let i = 0; i < n; i++) {
      const p = N.p[i];
      if (p < 0 || !shown(i) || ((N.f[i] & SDE) && N.st[i] <= 1) || (keep && !keep.has(i))) continue;
      const xm = (N.x[p] + N.x[i]) / 2;
      if (xm < left || xm > right) continue;
      const ym = (rowY(N.r[p]) + size(p) / 2 + rowY(N.r[i]) - size(i) / 2) / 2 + 3;
      const label = `${N.st[i]} step${N.st[i] === 1 ? '' : 's'}`;
      ctx.strokeText(label, xm, ym); ctx.fillText(label, xm, ym);
    }
  }
  let tiles = 0;
  const text = z * 10 >= 5;
  ctx.imageSmoothingEnabled = !V.pixelated;
  ctx.textAlign = 'center'; ctx.font = '10px ui-sans-serif, system-ui, sans-serif';
  const lo = V.scales.reward_low, hi = V.scales.reward_high;
  for (let i = 0; i < n; i++) {
    if (!shown(i) || !inView(i) || !rowIn(N.r[i])) continue;
    const s = size(i), x = N.x[i] - s / 2, y = rowY(N.r[i]) - s / 2, f = N.f[i];
    ctx.globalAlpha = keep && !keep.has(i) ? 0.15 : 1;
    ctx.fillStyle = '#f1f3f4'; ctx.fillRect(x, y, s, s);
    const a = N.a[i], bm = a >= 0 ? bitmaps[a] : null;
    if (bm) {
      const at = V.atlases[a], t = N.t[i];
      ctx.drawImage(bm, (t % at.columns) * at.tile, Math.floor(t / at.columns) * at.tile,
        at.tile, at.tile, x, y, s, s);
      tiles++;
    }
    const leafReward = (f & LEAF) && N.rw[i] !== null && lo !== null;
    if (leafReward) {
      ctx.strokeStyle = lerp(SEQUENTIAL, hi - lo > 0 ? (N.rw[i] - lo) / (hi - lo) : 1);
      ctx.lineWidth = FRAME; ctx.strokeRect(x - FRAME / 2, y - FRAME / 2, s + FRAME, s + FRAME);
    } else {
      ctx.strokeStyle = '#5f6368'; ctx.lineWidth = 1; ctx.strokeRect(x, y, s, s);
    }
    if (f & BRANCH) {
      const pad = FRAME + 2;
      ctx.strokeStyle = f & NEW ? NEW_BRANCH : BRANCHED; ctx.lineWidth = 2;
      ctx.setLineDash([3, 2]); ctx.strokeRect(x - pad, y - pad, s + 2 * pad, s + 2 * pad);
      ctx.setLineDash([]);
    }
    if (f & FOLD) {
      const fy = y + s + 7;
      ctx.beginPath(); ctx.arc(N.x[i], fy, 6, 0, 2 * Math.PI);
      ctx.fillStyle = '#fff'; ctx.fill(); ctx.strokeStyle = '#5f6368'; ctx.lineWidth = 1;
      ctx.stroke(); ctx.fillStyle = '#202124';
      ctx.fillText(folded.has(i) ? '+' : '−', N.x[i], fy + 3.5);
    }
    if (text && (f & LEAF) && N.rw[i] !== null) {
      ctx.fillStyle = '#202124'; ctx.fillText(N.rw[i].toFixed(2), N.x[i], y + s + FRAME + 11);
    }
  }
  ctx.globalAlpha = 1;
  if (V.branches && overlay && V.overlay_x) {
    ctx.textAlign = 'left'; ctx.fillStyle = BRANCHED;
    ctx.fillText(V.overlay_label || 'branch results', V.overlay_x + 4, V.geometry.pad - 2);
  }
  for (const [i, colour, dash] of [[selected, SELECTED, []], [cursor, '#1a73e8', [4, 3]]]) {
    if (i < 0 || i === selected && colour !== SELECTED || !shown(i)) continue;
    const s = size(i), pad = FRAME + 4;
    ctx.strokeStyle = colour; ctx.lineWidth = 3; ctx.setLineDash(dash);
    ctx.strokeRect(N.x[i] - s / 2 - pad, rowY(N.r[i]) - s / 2 - pad, s + 2 * pad, s + 2 * pad);
    ctx.setLineDash([]);
  }
  // The step gutter stays at the left edge whatever the pan: each row's step and sigma.
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.fillStyle = 'rgba(255,255,255,0.85)'; ctx.fillRect(0, 0, 64, H);
  ctx.textAlign = 'left';
  const gap = V.geometry.row * z;  // px between rows: labels that would overlap are left out
  V.rows.forEach((step, r) => {
    const y = rowY(r) * z + oy;
    if (y < -10 || y > H + 10 || (gap < 14 && r % Math.ceil(14 / gap))) return;
    ctx.fillStyle = '#202124'; ctx.font = '11px ui-sans-serif, system-ui, sans-serif';
    ctx.fillText(`step ${step}`, 6, gap < 28 ? y + 4 : y - 2);
    if (V.sigmas[r] !== null && gap >= 28) {
      ctx.fillStyle = '#5f6368'; ctx.font = '10px ui-sans-serif, system-ui, sans-serif';
      ctx.fillText(`σ ${V.sigmas[r].toFixed(2)}`, 6, y + 11);
    }
  });
  tilesDrawn = tiles;
  element.dataset.zoomValue = String(z);
  const label = $('[data-zoom-label]'); if (label) label.textContent = Math.round(z * 100) + '%';
}

// -- what a click or a key lands on ---------------------------------------------------------

function hit(sx, sy) {
  const wx = (sx - ox) / z, wy = (sy - oy) / z;
  const g = V.geometry;
  const r = Math.round((wy - g.pad - g.node / 2) / g.row);
  for (const row of [r, r - 1]) {
    if (row < 0 || row >= byRow.length) continue;
    const list = byRow[row];
    let lo = 0, hi = list.length;
    while (lo < hi) { const mid = (lo + hi) >> 1; if (N.x[list[mid]] < wx) lo = mid + 1; else hi = mid; }
    for (const k of [lo - 1, lo, lo + 1]) {
      const i = list[k];
      if (i === undefined || !shown(i)) continue;
      const s = size(i), dx = Math.abs(wx - N.x[i]), cy = rowY(row);
      if ((N.f[i] & FOLD) && Math.hypot(wx - N.x[i], wy - (cy + s / 2 + 7)) <= 8) {
        return {fold: i};
      }
      if (row === r && dx <= s / 2 + FRAME && Math.abs(wy - cy) <= s / 2 + FRAME) return {node: i};
    }
  }
  return null;
}

function leavesBelow(i) {
  const out = [], stack = [i];
  while (stack.length) {
    const j = stack.pop();
    if (!kids[j].length && N.rw[j] !== null && !(N.f[j] & BRANCH) === !(N.f[i] & BRANCH)) out.push(N.rw[j]);
    for (const c of kids[j]) stack.push(c);
  }
  return out;
}

function info(i) {
  const box = $('[data-info]'); if (!box) return;
  if (i < 0) { box.innerHTML = ''; delete box.dataset.infoNode; return; }
  const f = N.f[i], path = [];
  for (let j = i; j >= 0; j = N.p[j]) path.unshift(j);
  const made = f & SDE ? 'SDE step' : (N.p[i] < 0 ? 'root' : 'ODE step');
  const facts = [['node', `${N.n[i]} (id ${N.id[i]})`], ['step', V.rows[N.r[i]]],
    ['sigma', fmt(N.sg[i], 4)], ['made by', made], ['log-prob', fmt(N.lp[i], 4)],
    ['reward', fmt(N.rw[i], 4)], ['advantage', fmt(N.ad[i], 4, true)],
    ['leaf', f & LEAF ? 'yes' : 'no']];
  const below = f & LEAF ? [] : leavesBelow(i);
  if (below.length) {
    const mean = below.reduce((a, b) => a + b, 0) / below.length;
    facts.push(['leaves below', String(below.length)],
      ['their reward', `mean ${mean.toFixed(4)} · best ${Math.max(...below).toFixed(4)}`]);
  }
  const hops = path.map((j) => `<li data-node-id="${N.id[j]}"${j === i ? ' class="tg-current"' : ''}>`
    + `step ${V.rows[N.r[j]]}${N.ad[j] !== null ? ' · A ' + fmt(N.ad[j], 2, true) : ''}`
    + `${N.rw[j] !== null ? ' · R ' + fmt(N.rw[j], 2) : ''}</li>`).join('');
  box.innerHTML = '<table class="tg-kv">' + facts.map(([k, v]) =>
    `<tr><th>${esc(k)}</th><td data-field="${esc(k)}">${esc(v)}</td></tr>`).join('')
    + `</table><ol class="tg-tv-path" aria-label="path from the root">${hops}</ol>`;
  box.dataset.infoNode = String(N.id[i]);
  element.dataset.infoAt = now();
}

function announce(i) {
  const live = $('[data-live]'); if (!live || i < 0) return;
  live.textContent = `node ${N.n[i]}, step ${V.rows[N.r[i]]}` + (N.rw[i] !== null
    ? `, reward ${fmt(N.rw[i])}` : '') + (N.ad[i] !== null ? `, advantage ${fmt(N.ad[i], 3, true)}` : '')
    + ` (${kids[i].length} children)`;
}

function select(i, send = true) {
  selected = i; cursor = i;
  info(i); draw();
  element.dataset.selected = i >= 0 ? String(N.id[i]) : '';
  if (i >= 0 && send) {
    window.tgWantedNode = N.id[i];
    trigger('select', {node_id: N.id[i]});
  }
}

function reveal(i) {
  const w = canvas.clientWidth, h = canvas.clientHeight, sx = N.x[i] * z + ox, sy = rowY(N.r[i]) * z + oy;
  if (sx < 70 || sx > w - 30) ox = w / 2 - N.x[i] * z;
  if (sy < 20 || sy > h - 20) oy = h / 2 - rowY(N.r[i]) * z;
  clampPan();
}

function position(id) { return N ? N.id.indexOf(id) : -1; }

// -- events ---------------------------------------------------------------------------------

let drag = null;
canvas.addEventListener('pointerdown', (e) => {
  drag = {x: e.clientX, y: e.clientY, ox, oy, moved: false};
  canvas.setPointerCapture(e.pointerId);
});
canvas.addEventListener('pointermove', (e) => {
  if (!drag) return;
  const dx = e.clientX - drag.x, dy = e.clientY - drag.y;
  if (!drag.moved && Math.hypot(dx, dy) < 4) return;
  drag.moved = true; ox = drag.ox + dx; oy = drag.oy + dy; fitted = false; clampPan(); draw();
});
canvas.addEventListener('pointerup', (e) => {
  const was = drag; drag = null;
  if (!V || (was && was.moved)) return;
  const box = canvas.getBoundingClientRect();
  const found = hit(e.clientX - box.left, e.clientY - box.top);
  if (!found) return;
  if (found.fold !== undefined) {
    if (folded.has(found.fold)) folded.delete(found.fold); else folded.add(found.fold);
    applyFold(); draw(); return;
  }
  canvas.focus({preventScroll: true});
  select(found.node);
});
canvas.addEventListener('wheel', (e) => {
  if (!V) return;
  const box = canvas.getBoundingClientRect();
  if (e.ctrlKey || e.metaKey) {
    e.preventDefault();
    setZoom(z * Math.exp(-e.deltaY / 300), e.clientX - box.left, e.clientY - box.top);
  } else if (e.shiftKey) {
    e.preventDefault(); ox -= e.deltaY || e.deltaX; fitted = false; clampPan(); draw();
  }
}, {passive: false});
canvas.addEventListener('keydown', (e) => {
  if (!V) return;
  let i = cursor >= 0 ? cursor : (V.roots[0] ?? -1);
  if (i < 0) return;
  const p = N.p[i];
  const sibs = p >= 0 ? kids[p].filter(shown) : V.roots;
  const at = sibs.indexOf(i);
  if (e.key === 'ArrowUp' && p >= 0) i = p;
  else if (e.key === 'ArrowDown' && kids[i].length && !folded.has(i)) {
    const c = kids[i].filter(shown); i = c[Math.floor((c.length - 1) / 2)] ?? i;
  } else if (e.key === 'ArrowLeft' && at > 0) i = sibs[at - 1];
  else if (e.key === 'ArrowRight' && at >= 0 && at < sibs.length - 1) i = sibs[at + 1];
  else if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); select(i); return; }
  else if (e.key === '+' || e.key === '=') { setZoom(z * 1.25, canvas.clientWidth / 2, canvas.clientHeight / 2); return; }
  else if (e.key === '-') { setZoom(z / 1.25, canvas.clientWidth / 2, canvas.clientHeight / 2); return; }
  else return;
  e.preventDefault();
  cursor = i; reveal(i); announce(i); draw();
});
element.addEventListener('click', (e) => {
  const fb = e.target.closest('button[data-filter]');
  if (fb && V) { filter = fb.dataset.filter; applyFilter(); draw(); return; }
  const zb = e.target.closest('button[data-zoom]');
  if (zb && V) {
    const how = zb.dataset.zoom, w = canvas.clientWidth, h = canvas.clientHeight;
    if (how === 'fit') { fit(); resize(); draw(); return; }
    if (how === '1') { setZoom(1, w / 2, h / 2); return; }
    setZoom(how === 'in' ? z * 1.25 : z / 1.25, w / 2, h / 2); return;
  }
  const li = e.target.closest('li[data-node-id]');
  if (li && V) {
    const i = position(Number(li.dataset.nodeId));
    if (i >= 0) { reveal(i); select(i); }
  }
});
element.addEventListener('change', (e) => {
  if (e.target && e.target.matches('input[data-overlay]')) { overlay = e.target.checked; draw(); }
});
new ResizeObserver(() => {
  if (!V) return;
  if (pending || fitted) { if (fitted) fit(); draw(); }
}).observe(stage);

// -- a new view -----------------------------------------------------------------------------

function ranks() {
  const box = $('[data-ranks]'); if (!box) return;
  box.innerHTML = ['best', 'worst'].map((kind) => `<div class="tg-rank tg-rank-${kind}"><b>`
    + `${kind[0].toUpperCase() + kind.slice(1)} ${V[kind].length} leaves</b><ol>`
    + V[kind].map((i) => {
      const steps = [];
      for (let j = i; j >= 0; j = N.p[j]) steps.unshift(`step ${V.rows[N.r[j]]}`);
      return `<li data-node-id="${N.id[i]}">reward <b>${fmt(N.rw[i])}</b> · node ${N.n[i]} · `
        + `${esc(steps.join(' → '))}</li>`;
    }).join('')
    + '</ol></div>').join('');
}

function stamp(name) {
  requestAnimationFrame(() => { element.dataset[name] = now(); });
}

function loadAtlases(view, token) {
  const files = view.atlases || [];
  element.dataset.tiles = String(N.t.filter((t) => t >= 0).length);
  if (!files.length) { stamp('completeAt'); return; }
  let left = files.length;
  files.forEach((atlas, a) => {
    const url = atlas.url;
    const img = new Image();
    img.decoding = 'async';
    const done = (ok) => {
      if (token !== atlasToken) return;
      const finish = (bm) => {
        if (token !== atlasToken) return;
        bitmaps[a] = bm;
        if (--left === 0) { draw(); element.dataset.tilesDrawn = String(tilesDrawn); stamp('completeAt'); }
      };
      if (!ok) { finish(null); return; }
      if (window.createImageBitmap) createImageBitmap(img).then(finish, () => finish(img));
      else finish(img);
    };
    img.onload = () => done(true); img.onerror = () => done(false);
    img.src = typeof url === 'string' ? url : '';
  });
}

function show(view) {
  const fresh = !V || view.tree !== shownTree;
  const keepZoom = !fresh ? {z, ox, oy, fitted} : null;
  index(view);
  atlasToken++; bitmaps = new Array((view.atlases || []).length).fill(null);
  if (fresh) {
    folded = new Set(); filter = 'all'; selected = -1; cursor = -1; overlay = true;
    window.tgWantedNode = null;
  } else {
    folded = new Set([...folded].filter((i) => i < N.id.length));
  }
  const sel = view.selected ?? null;
  if (sel !== null) { selected = position(sel); cursor = selected; }
  else if (fresh) { selected = -1; }
  shownTree = view.tree;
  $('[data-caption]').innerHTML = view.caption || '';
  $('[data-legend]').innerHTML = view.legend || '';
  const ov = $('[data-overlay-box]');
  ov.hidden = !view.branches;
  ov.querySelector('span').textContent = `show branch results (${view.branches} states)`;
  ov.querySelector('input').checked = overlay;
  $('[data-count]').textContent = `${N.id.length} nodes drawn (ODE chains collapsed) · `
    + 'click a node; ± folds a subtree; drag to pan, ctrl+wheel zooms; arrows and Enter';
  canvas.setAttribute('aria-label', `Tree ${view.tree}: ${N.id.length} drawn nodes, `
    + `${view.leaves} leaves. Arrow keys move, Enter selects.`);
  element.dataset.treeId = String(view.tree);
  element.dataset.nodes = String(N.id.length);
  element.dataset.tilesDrawn = '0';
  delete element.dataset.completeAt;
  applyFold(); applyFilter(); ranks();
  if (keepZoom) ({z, ox, oy, fitted} = keepZoom); else fit();
  if (keepZoom && fitted) fit();
  info(selected);
  const t = performance.now();
  draw();
  element.dataset.drawMs = (performance.now() - t).toFixed(1);
  stamp('drawnAt');
  loadAtlases(view, atlasToken);
}

function clear() {
  V = null; N = null; shownTree = null; atlasToken++;
  element.dataset.treeId = ''; element.dataset.nodes = '0';
  ctx.setTransform(1, 0, 0, 1, 0, 0); ctx.clearRect(0, 0, canvas.width, canvas.height);
  $('[data-caption]').innerHTML = ''; $('[data-legend]').innerHTML = ''; $('[data-ranks]').innerHTML = '';
  $('[data-count]').textContent = ''; info(-1);
}

function render() {
  element.dataset.valueAt = now();  // when the value arrived (the test hook's timestamps)
  const value = props.value;
  const empty = $('[data-empty]');
  if (!value || typeof value !== 'object' || typeof value.view !== 'string') {
    empty.hidden = false;
    // A string is the server's notice (frontend/render.notice escapes what it quotes).
    if (typeof value === 'string' && value) empty.innerHTML = value;
    else empty.textContent = 'Pick a job and one of its logged trees.';
    clear(); return;
  }
  empty.hidden = true;
  // Plain arrays, parsed here from text (reads through Gradio's reactive value are slow).
  const view = JSON.parse(value.view);
  (view.atlases || []).forEach((atlas, a) => {
    const file = (value.files || [])[a];
    atlas.url = file && typeof file === 'object' ? (file.url || '') : String(file || '');
  });
  view.selected = value.selected ?? null;
  show(view);
}

element.tgTree = {
  pos(id) {
    const i = position(id); if (i < 0) return null;
    const box = canvas.getBoundingClientRect();
    return {x: box.left + N.x[i] * z + ox, y: box.top + rowY(N.r[i]) * z + oy};
  },
  state() {
    return {tree: shownTree, nodes: N ? N.id.length : 0, leaves: V ? V.leaves : 0, zoom: z, pan: [ox, oy], filter,
      folded: [...folded].map((i) => N.id[i]), selected: selected >= 0 ? N.id[selected] : null,
      cursor: cursor >= 0 ? N.id[cursor] : null, tilesDrawn, overlay,
      pixelated: !!(V && V.pixelated), atlases: V ? V.atlases.map((a) => a.url) : [],
      drawnAt: Number(element.dataset.drawnAt || 0), completeAt: Number(element.dataset.completeAt || 0)};
  },
  fold(id) { const i = position(id); if (i < 0) return; if (folded.has(i)) folded.delete(i); else folded.add(i); applyFold(); draw(); },
  select(id) { const i = position(id); if (i >= 0) { reveal(i); select(i); } },
  visible(id) { const i = position(id); return i >= 0 && shown(i); },
  // Ids of the drawn nodes whose flags have every bit of `mask` (tree_view.py's flags).
  ids(mask = 0) { return N ? N.id.filter((_, i) => (N.f[i] & mask) === mask && shown(i)) : []; },
  // Where the training tree's nodes sit (tree coordinates): a branch must never move them.
  places() { return N ? Object.fromEntries(N.id.map((id, i) => [id, [N.x[i], rowY(N.r[i])]])
    .filter((_, i) => !(N.f[i] & BRANCH))) : {}; },
  root() { return V && V.roots.length ? N.id[V.roots[0]] : null; },
  dimmed() { return N && keep ? N.id.filter((_, i) => !keep.has(i)).length : 0; },
};
window.tgMarkTreeNode = (id) => { const i = position(id); if (i >= 0) { selected = i; cursor = i; info(i); draw(); } };
watch('value', render);
render();
