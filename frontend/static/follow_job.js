// frontend/polling.py follow_job_on_screen: the shared job changed. Each tab's "followed" box
// holds "<tab id>:<count>"; only the box of the tab on screen takes a new count, so only that
// tab's loaders run (a server event per hidden tab cost the page its whole component walk).
// The other boxes get `undefined`, which Gradio leaves untouched: written back with their own
// value, a hidden box's change fired again and again (Gradio compares a box it has not drawn
// with the value it was created with), and a hidden tab's loaders ran in a loop.
(shown, ...marks) => {
  const out = marks.map((mark) => {
    const [tab, count] = String(mark).split(':');
    return tab === shown ? `${tab}:${Number(count || 0) + 1}` : undefined;
  });
  return out.length === 1 ? out[0] : out;
}
