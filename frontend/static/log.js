// The Run tab's log tail (frontend/run.py): it opens at its newest line and follows new lines,
// unless the reader scrolled up to read older ones. A box drawn while its tab is hidden has no
// height, so it also scrolls when it becomes visible (ResizeObserver).
const box = () => element.querySelector('pre.tg-log');
let follow = true;
const toEnd = () => { const b = box(); if (b && follow) b.scrollTop = b.scrollHeight; };
element.addEventListener('scroll', (e) => {
  const b = e.target;
  if (b && b.classList && b.classList.contains('tg-log')) {
    follow = b.scrollTop + b.clientHeight >= b.scrollHeight - 4;
  }
}, true);
new ResizeObserver(toEnd).observe(element);
watch('value', () => { toEnd(); const b = box(); if (b) new ResizeObserver(toEnd).observe(b); });
toEnd();
