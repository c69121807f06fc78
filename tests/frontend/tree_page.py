"""The tree inspector's canvas as a browser test sees it: through the view's test hook
(`element.tgTree` and its data-* timestamps, frontend/static/tree.js), timed from the user's
click on the browser's own clock (Playwright's overhead before the click is not counted)."""

from __future__ import annotations

from typing import Any

VIEW = "#tg-tree .tg-tree-view"
LEAF, SDE, BRANCH, NEW, FOLD = 1, 2, 4, 8, 16  # frontend/tree_view.py's flags


def arm(page: Any) -> None:
    """Record the time of the next click (capture phase, its event timestamp) and every main
    thread task over 50 ms from now on (PerformanceObserver 'longtask')."""
    page.evaluate(
        """() => {
          window.__t0 = null; window.__p0 = null; window.__long = [];
          window.addEventListener('click', (e) => { window.__t0 = e.timeStamp; },
                                  {capture: true, once: true});
          window.addEventListener('pointerdown', (e) => { window.__p0 = e.timeStamp; },
                                  {capture: true, once: true});
          if (!window.__observer) {
            window.__observer = new PerformanceObserver((list) => {
              for (const e of list.getEntries()) (window.__long || []).push(e.duration);
            });
            window.__observer.observe({type: 'longtask'});
          }
        }"""
    )


def arm_press_only(page: Any) -> None:
    """Record the next pointer press only (the long tasks seen so far are kept)."""
    page.evaluate(
        """() => { window.__p0 = null;
          window.addEventListener('pointerdown', (e) => { window.__p0 = e.timeStamp; },
                                  {capture: true, once: true}); }"""
    )


def wait_drawn(
    page: Any, before: str | None, timeout: float = 30, *, since_click: bool = True
) -> dict[str, float]:
    """Wait for a tree other than `before`, drawn and complete (every tile); its timings in
    seconds from the armed click: value (arrived in the page), drawn, complete. Without
    `since_click`, a tree drawn before the click (while its tab was hidden) counts too."""
    page.wait_for_function(
        """([before, since]) => {
          const el = document.querySelector('#tg-tree .tg-tree-view');
          return el && el.dataset.treeId && el.dataset.treeId !== before
            && el.dataset.drawnAt && el.dataset.completeAt
            && (!since || (window.__t0 !== null && Number(el.dataset.drawnAt) > window.__t0));
        }""",
        arg=[before or "", since_click],
        polling="raf",
        timeout=timeout * 1000,
    )
    out: dict[str, float] = page.evaluate(
        """() => { const d = document.querySelector('#tg-tree .tg-tree-view').dataset;
          const t0 = window.__t0;
          return {value: (d.valueAt - t0) / 1000, drawn: (d.drawnAt - t0) / 1000,
                  complete: (d.completeAt - t0) / 1000, nodes: Number(d.nodes),
                  tiles: Number(d.tiles), tiles_drawn: Number(d.tilesDrawn),
                  tree: Number(d.treeId), draw_ms: Number(d.drawMs)}; }"""
    )
    return out


def hook(page: Any, call: str, *args: Any) -> Any:
    """element.tgTree.<call>(*args)."""
    return page.evaluate(
        f"(args) => document.querySelector('{VIEW}').tgTree.{call}(...args)", list(args)
    )


def ids(page: Any, mask: int = 0) -> list[int]:
    return list(hook(page, "ids", mask))


def click_node(page: Any, node_id: int) -> None:
    """A real mouse click at the node's place on the canvas (scrolled into the page first)."""
    page.locator("#tg-tree canvas").scroll_into_view_if_needed()
    point = hook(page, "pos", node_id)
    assert point is not None, f"node {node_id} is not drawn"
    page.mouse.click(point["x"], point["y"])


def panel_delay(page: Any, node_id: int) -> float:
    """Seconds from the armed pointer press to the panel's numbers of `node_id` in the page."""
    page.wait_for_function(
        f"() => document.querySelector('{VIEW} [data-info]')?.dataset.infoNode === '{node_id}'",
        polling="raf",
    )
    return float(
        page.evaluate(
            f"() => (document.querySelector('{VIEW}').dataset.infoAt - window.__p0) / 1000"
        )
    )


def long_tasks(page: Any) -> list[float]:
    return list(page.evaluate("() => window.__long || []"))
