// The Runs table (frontend/runs.py loads this as the table's js_on_load). Delegated listeners:
// a click (or Enter) on a row highlights it at once and tells Python which job it is.
// Opening is its own event: Gradio drops a trigger while the same event is still pending, so a
// second 'select' from a double click would be lost.
const pick = (row, open) => {
  if (!row) return;
  element.querySelectorAll('tr.tg-selected').forEach((r) => r.classList.remove('tg-selected'));
  row.classList.add('tg-selected');
  trigger(open ? 'double_click' : 'select', {job_id: Number(row.dataset.jobId), open: open});
};
// A click picks on the button's release, and a double click opens, the row pressed: the table
// refreshes every few seconds and Gradio draws it again whole, so a refresh that landed between
// press and release removed the pressed row (the browser then sent the click to no row) or,
// with a new run on top, put its neighbour under the pointer (a double click opened that one).
let pressed = null;
element.addEventListener('pointerdown', (e) => {
  const row = e.button === 0 ? e.target.closest('tr[data-job-id]') : null;
  pressed = row ? row.dataset.jobId : null;
});
const pressedRow = () =>
  pressed === null ? null : element.querySelector(`tr[data-job-id="${pressed}"]`);
element.addEventListener('pointerup', (e) => {
  if (e.button === 0) pick(pressedRow(), false);
});
element.addEventListener('dblclick', () => pick(pressedRow(), true));
element.addEventListener('keydown', (e) => {
  if (e.key === 'Enter') pick(e.target.closest('tr[data-job-id]'), true);
});
