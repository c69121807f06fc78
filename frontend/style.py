"""The dashboard's stylesheet (passed to Gradio as `css`; no external font or asset)."""

CSS = """
.tg-header { display:flex; align-items:baseline; gap:12px; }
.tg-header h1 { margin:0; font-size:1.35rem; white-space:nowrap; }
.tg-muted { color:#5f6368; font-size:0.85em; }
.tg-empty { color:#5f6368; padding:12px; border:1px dashed #dadce0; border-radius:6px; }
.tg-notice { padding:8px 12px; border-radius:6px; margin:4px 0; white-space:pre-wrap;
  word-break:break-word; }
.tg-info { background:#e8f0fe; color:#174ea6; }
.tg-ok { background:#e6f4ea; color:#137333; }
.tg-warn { background:#fef7e0; color:#8a5a00; }
.tg-error { background:#fce8e6; color:#a50e0e; }
.tg-field-error { color:#a50e0e; font-size:0.85em; margin-top:2px; white-space:pre-wrap; }
.tg-badge { display:inline-block; padding:1px 8px; border-radius:10px; font-size:0.8em;
  font-weight:600; background:#e8eaed; color:#3c4043; }
.tg-s-queued { background:#e8eaed; color:#3c4043; }
.tg-s-running { background:#d2e3fc; color:#174ea6; }
.tg-s-cancelling { background:#fef7e0; color:#8a5a00; }
.tg-s-succeeded { background:#ceead6; color:#0d652d; }
.tg-s-failed, .tg-s-lost { background:#fad2cf; color:#a50e0e; }
.tg-s-cancelled, .tg-s-interrupted { background:#fde293; color:#5f4100; }
.tg-progress { position:relative; width:120px; height:16px; background:#f1f3f4;
  border-radius:8px; overflow:hidden; }
.tg-progress-fill { height:100%; border-radius:8px; }
.tg-progress-fill.tg-s-running { background:#8ab4f8; }
.tg-progress-fill.tg-s-succeeded { background:#81c995; }
.tg-progress-text { position:absolute; inset:0; text-align:center; font-size:11px;
  line-height:16px; color:#202124; }
.tg-table { width:100%; border-collapse:collapse; font-size:0.9em; border:none !important; }
.tg-table th, .tg-table td, .tg-table tr, .tg-table thead, .tg-table tbody,
.tg-kv tr, .tg-kv tbody { border:none !important; }
.tg-table th { text-align:left; font-weight:600; color:#5f6368; padding:6px 8px;
  border-bottom:1px solid #dadce0 !important; background:#fff; position:sticky; top:0; }
.tg-table td { padding:6px 8px; vertical-align:middle; border-bottom:1px solid #f1f3f4 !important; }
.tg-table caption { caption-side:bottom; text-align:left; color:#5f6368; font-size:0.85em;
  padding-top:6px; }
.tg-jobs tr.tg-job { cursor:pointer; }
.tg-jobs tr.tg-job:hover { background:#f8f9fa; }
.tg-jobs tr.tg-selected, .tg-jobs tr.tg-selected:hover { background:#e8f0fe; }
.tg-num { font-variant-numeric:tabular-nums; text-align:right; }
.tg-job-name { font-weight:600; word-break:break-word; }
.tg-row-error { color:#a50e0e; font-size:0.8em; }
.tg-table-wrap { max-height:420px; overflow:auto; }
.tg-card { border:1px solid #dadce0; border-radius:8px; padding:12px; }
.tg-card-title { font-size:1.1rem; margin-bottom:8px; }
.tg-facts { display:flex; flex-wrap:wrap; gap:8px 20px; }
.tg-fact { display:flex; flex-direction:column; font-size:0.9em; }
.tg-fact span { color:#5f6368; font-size:0.8em; }
.tg-actions { margin-top:10px; }
.tg-button { display:inline-block; padding:5px 12px; border-radius:6px; background:#1a73e8;
  color:#fff !important; text-decoration:none; font-size:0.9em; }
.tg-error-text { background:#fce8e6; color:#a50e0e; padding:8px; border-radius:6px;
  white-space:pre-wrap; max-height:160px; overflow:auto; }
.tg-checks { border-collapse:collapse; margin:0 0 8px 0; font-size:13px; }
.tg-checks caption { text-align:left; font-weight:600; padding-bottom:4px; }
.tg-checks td { padding:2px 12px 2px 0; border-bottom:1px solid #f1f3f4; }
.tg-check-warn td { color:#b3261e; font-weight:600; }
.tg-charts { display:grid; grid-template-columns:repeat(auto-fill, minmax(440px, 1fr)); gap:10px; }
.tg-charts svg { background:#fff; border:1px solid #f1f3f4; border-radius:6px; width:100%;
  height:auto; }
.tg-err-slot { min-height:0 !important; }
.tg-err-slot:empty, .tg-err-slot > div:empty { display:none; }
.tg-gallery-title { font-weight:600; margin-bottom:6px; }
.tg-play { display:grid; grid-template-columns:1fr 1fr; gap:16px; }
.tg-grid { display:grid; grid-template-columns:repeat(auto-fill, minmax(64px, 1fr)); gap:6px; }
.tg-sample { margin:0; font-size:0.75em; }
.tg-sample img { width:100%; aspect-ratio:1; object-fit:cover; border-radius:4px;
  background:#f1f3f4; }
.tg-prompt { white-space:normal; overflow-wrap:anywhere; color:#3c4043; }
.tg-pixelated { image-rendering:pixelated; }
.tg-noimg { aspect-ratio:1; background:#f1f3f4; display:flex; align-items:center;
  justify-content:center; color:#80868b; }
.tg-tree-toolbar { display:flex; gap:6px; align-items:center; margin:4px 0; flex-wrap:wrap; }
.tg-tree-toolbar button { border:1px solid #dadce0; background:#fff; border-radius:6px;
  padding:2px 10px; cursor:pointer; }
.tg-tree-scroll { overflow:auto; max-height:680px; border:1px solid #dadce0; border-radius:8px;
  background:#fff; }
.tg-tree-scroll svg.treegrpo-tree { display:block; }
.treegrpo-tree g.tn, .treegrpo-tree g.edge { cursor:pointer; }
.treegrpo-tree g.tn:hover rect { stroke:#f59e0b; }
.treegrpo-tree g.tn:focus { outline:none; }
.treegrpo-tree g.tn:focus-visible rect { stroke:#f59e0b; stroke-width:2; }
.tg-tree-wrap { display:block; }
.tg-tree-caption { font-size:0.9em; margin:4px 0; }
.tg-tree-toolbar button.tg-on { background:#e8f0fe; border-color:#1a73e8; }
.tg-no-overlay g.branch-overlay { display:none; }
.treegrpo-tree .tg-dim { opacity:0.12; }
.treegrpo-tree g.fold { cursor:pointer; }
.tg-ranks { display:none; gap:24px; font-size:0.85em; margin:4px 0; }
.tg-tree-view[data-filter=best] .tg-ranks, .tg-tree-view[data-filter=worst] .tg-ranks {
  display:flex; }
.tg-tree-view[data-filter=best] .tg-rank-worst,
.tg-tree-view[data-filter=worst] .tg-rank-best { display:none; }
.tg-ranks ol { margin:2px 0 0 18px; padding:0; }
.tg-ranks li { cursor:pointer; }
.tg-panel { border:1px solid #dadce0; border-radius:8px; padding:10px; }
.tg-panel-top { display:flex; gap:12px; flex-wrap:wrap; }
.tg-panel-image { display:flex; flex-direction:column; gap:2px; }
.tg-panel-image img, .tg-panel-image .tg-noimg { width:176px; height:176px; border-radius:6px;
  background:#f1f3f4; object-fit:contain; }
.tg-kv { font-size:0.85em; border-collapse:collapse; border:none !important; width:auto; }
.tg-kv th, .tg-kv td { border:none !important; padding:1px 12px 1px 0 !important;
  background:none !important; }
.tg-kv th { text-align:left; color:#5f6368; font-weight:500; }
.tg-kv td { font-variant-numeric:tabular-nums; font-weight:600; }
.tg-path-title { margin-top:10px; font-size:0.85em; color:#5f6368; }
.tg-path { display:flex; flex-wrap:wrap; gap:6px; list-style:none; padding:0; margin:4px 0 0; }
.tg-hop { display:flex; flex-direction:column; align-items:center; font-size:10px; width:52px;
  cursor:pointer; border:1px solid transparent; border-radius:4px; padding:2px; }
.tg-hop img { width:44px; height:44px; border-radius:3px; background:#f1f3f4; }
.tg-hop.tg-current { border-color:#f59e0b; }
.tg-key-status { font-size:0.85em; }
.tg-sbs th.tg-prompt { max-width:220px; font-weight:500; }
.tg-sbs-cell img { width:96px; height:96px; border-radius:4px; background:#f1f3f4;
  object-fit:contain; }
#tg-phase-chart { margin-top:10px; max-width:100%; height:auto; }
.tg-tags { display:flex; flex-wrap:wrap; gap:4px; margin-top:2px; }
.tg-tag { font-size:0.75em; padding:0 6px; border-radius:8px; background:#e8f0fe; color:#174ea6; }
.tg-log { height:300px; overflow:auto; margin:0; padding:8px; font-size:12px; line-height:1.35;
  background:#f8f9fa; border:1px solid #dadce0; border-radius:6px; white-space:pre-wrap;
  word-break:break-word; }
.tg-log-empty { color:#5f6368; }
"""
