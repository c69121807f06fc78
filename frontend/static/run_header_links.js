// The Run header's download links renew by selecting the run again (links.js runs first).
window.tgWatchLinks(element, () => trigger('select', {}));
