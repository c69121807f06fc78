// The Runs tab's Cancel, Resume and Delete buttons (frontend/runs.py, an event's `js`): the
// job they act on is the row the page highlights now, not the server's selection, which a
// click under load reaches seconds later (a delete once hit the previous run). The last input
// is that row's id (null when none is highlighted).
(...args) => {
  const row = document.querySelector('#tg-jobs tr.tg-selected');
  args[args.length - 1] = row ? Number(row.dataset.jobId) : null;
  return args;
}
