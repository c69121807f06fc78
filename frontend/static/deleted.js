// The Runs tab's "recently deleted" list (frontend/runs.py): a Restore button tells Python
// which job to bring back.
element.addEventListener('click', (e) => {
  const button = e.target.closest('button[data-restore-id]');
  if (!button) return;
  button.disabled = true;
  trigger('select', {job_id: Number(button.dataset.restoreId)});
});
