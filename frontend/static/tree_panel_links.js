// The panel's full-size link renews by selecting the panel's node again (links.js runs first).
window.tgWatchLinks(element, () => {
  const panel = element.querySelector('.tg-panel[data-node-id]');
  if (panel) trigger('select', {node_id: Number(panel.dataset.nodeId)});
});
