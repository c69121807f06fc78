// frontend/shared.py show_tab_js: bring tab TAB_ID on screen as a click on its button does
// (Gradio switches, then polling.py's switch event starts its loaders). Switching from a server
// event instead made the whole tab set one of that event's outputs, which Gradio then
// snapshotted, every component in every tab, on each later event of the page.
() => {
  document.querySelector('#tg-tab-TAB_ID-button')?.click();
  return [];
}
