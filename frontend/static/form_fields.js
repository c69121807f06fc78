// frontend/submit.py: hide the submit form's fields that the chosen algorithm does not use.
// `hidden` is a JSON list of the fields' column ids. A stylesheet rule rather than Gradio
// visibility updates: those made 19 columns outputs of the page's first event, and Gradio then
// snapshotted each column and everything in it on every later event of the page. A rule also
// holds for columns drawn later (a tab drawn when first shown).
(hidden) => {
  let ids = [];
  try { ids = JSON.parse(hidden || '[]'); } catch (e) { ids = []; }
  let sheet = document.getElementById('tg-f-hidden-style');
  if (!sheet) {
    sheet = document.createElement('style');
    sheet.id = 'tg-f-hidden-style';
    document.head.appendChild(sheet);
  }
  sheet.textContent = ids.length
    ? ids.map((id) => `#${CSS.escape(id)}`).join(', ') + ' { display: none !important; }'
    : '';
  return [];
}
