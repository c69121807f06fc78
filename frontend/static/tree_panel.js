// The node panel beside the tree (a gr.HTML of frontend/render.node_panel): its path entries
// select a node; a panel that arrives for another node than the last one clicked asks again
// (Gradio drops a trigger while the previous 'select' is still pending).
element.addEventListener('click', (e) => {
  const n = e.target.closest('li[data-node-id]');
  if (!n) return;
  const id = Number(n.dataset.nodeId);
  if (window.tgMarkTreeNode) window.tgMarkTreeNode(id);
  window.tgWantedNode = id;
  trigger('select', {node_id: id});
});
watch('value', () => {
  const panel = element.querySelector('.tg-panel[data-node-id]');
  if (!panel) return;
  const wanted = window.tgWantedNode;
  if (wanted && Number(panel.dataset.nodeId) !== wanted) {
    trigger('select', {node_id: wanted});
    return;
  }
  panel.scrollIntoView({block: 'nearest', behavior: 'smooth'});
});
