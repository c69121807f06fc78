// frontend/polling.py: which tab is shown now, as its elem_id ("tg-tab-run"), read from the
// selected tab button ("tg-tab-run-button") on the next frame, once the switch that fired the
// event is drawn.
async (...args) => {
  await new Promise((resolve) => requestAnimationFrame(() => resolve()));
  const button = document.querySelector('#tg-tabs button[role="tab"][aria-selected="true"]');
  args[0] = button ? button.id.replace(/-button$/, '') : '';
  return args;
}
