// Links the browser opens itself (a checkpoint or LoRA download, a node's full-size image:
// frontend/links.py) expire. A click on one also asks the UI whether it still works. When it
// does not, the page says so and gets fresh links (`renew`), where a download used to fail
// without a word. The note is a toast on the page: the links' own HTML is redrawn by the renewal.
window.tgWatchLinks = window.tgWatchLinks || ((element, renew) => {
  element.addEventListener('click', (e) => {
    const link = e.target.closest('a[href^="files/"]');
    if (!link) return;
    fetch(link.getAttribute('href') + '/alive', {cache: 'no-store'})
      .then(async (answer) => {
        if (answer.status !== 404) return;
        const toast = document.createElement('div');
        toast.className = 'tg-toast tg-link-expired';
        toast.setAttribute('role', 'alert');
        toast.textContent = `${await answer.text()} Fresh links are in place now: click again.`;
        document.body.appendChild(toast);
        setTimeout(() => toast.remove(), 10000);
        renew();
      })
      .catch(() => {});
  });
});
