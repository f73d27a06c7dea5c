// Audience pages: progress of htmx form uploads, and a readable message when a send fails.
(function () {
  "use strict";

  function part(event, selector) {
    const form = event.target instanceof Element ? event.target.closest("form") : null;
    return form ? form.querySelector(selector) : null;
  }

  document.addEventListener("htmx:beforeRequest", function (event) {
    const progress = part(event, "progress[data-upload-progress]");
    const error = part(event, "[data-upload-error]");
    if (progress) {
      progress.value = 0;
    }
    if (error) {
      error.hidden = true;
    }
  });

  // htmx 2 re-dispatches the XHR's progress events as htmx:xhr:progress on the requesting element — the upload's
  // and then the response's, without saying which: the bar only moves forwards, so the response's download
  // cannot pull it back once the file is up.
  document.addEventListener("htmx:xhr:progress", function (event) {
    const progress = part(event, "progress[data-upload-progress]");
    if (progress && event.detail.lengthComputable && event.detail.total > 0) {
      const done = Math.round((event.detail.loaded / event.detail.total) * 100);
      progress.value = Math.max(progress.value, done);
    }
  });

  // htmx swaps nothing on an error status; say what happened instead of failing silently.
  document.addEventListener("htmx:responseError", function (event) {
    const error = part(event, "[data-upload-error]");
    if (!error) {
      return;
    }
    const status = event.detail.xhr.status;
    error.textContent = status === 413
      ? "Too much for one request: paste fewer keys, or upload them as a file."
      : "The server could not handle this (status " + status + "). Try again, or reload the page.";
    error.hidden = false;
  });
})();
