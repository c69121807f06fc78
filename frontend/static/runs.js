// The Runs table (frontend/runs.py loads this as the table's js_on_load). One delegated
// listener: a click (or Enter) on a row highlights it at once and tells Python which job it is.
// Opening is its own event: Gradio drops a trigger while the same event is still pending, so a
// second 'select' from a double click would be lost.
const pick = (row, open) => {
  if (!row) return;
  element.querySelectorAll('tr.tg-selected').forEach((r) => r.classList.remove('tg-selected'));
  row.classList.add('tg-selected');
  trigger(open ? 'double_click' : 'select', {job_id: Number(row.dataset.jobId), open: open});
};
element.addEventListener('click', (e) => pick(e.target.closest('tr[data-job-id]'), false));
element.addEventListener('dblclick', (e) => pick(e.target.closest('tr[data-job-id]'), true));
element.addEventListener('keydown', (e) => {
  if (e.key === 'Enter') pick(e.target.closest('tr[data-job-id]'), true);
});
