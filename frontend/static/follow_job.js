// frontend/polling.py follow_job_on_screen: the shared job changed. Each tab's "followed" box
// holds "<tab id>:<count>"; only the box of the tab on screen takes a new count, so only that
// tab's loaders run (a server event per hidden tab cost the page its whole component walk).
(shown, ...marks) => {
  const out = marks.map((mark) => {
    const [tab, count] = String(mark).split(':');
    return tab === shown ? `${tab}:${Number(count || 0) + 1}` : mark;
  });
  return out.length === 1 ? out[0] : out;
}
