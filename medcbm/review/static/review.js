// medcbm review: save an answer as soon as it is chosen and update the prediction in place.
// Without this script every form still works (a Save button and a page reload).
(function () {
  "use strict";
  document.documentElement.classList.add("js");
  function send(form) {
    const status = document.getElementById("changes");
    const t0 = performance.now();
    return fetch(form.action, {method: "POST", body: new URLSearchParams(new FormData(form)),
                               headers: {"Accept": "application/json"},
                               credentials: "same-origin"})
      .then(function (r) { return r.json().then(function (body) { return {ok: r.ok, body: body}; }); })
      .then(function (res) {
        if (!res.ok) { status.textContent = res.body.error || "The answer was not saved."; return; }
        document.getElementById("prediction").innerHTML = res.body.prediction;
        status.innerHTML = res.body.changes;
        Object.keys(res.body.rows).forEach(function (k) {
          const cell = document.querySelector('[data-push="' + CSS.escape(k) + '"]');
          if (cell) { cell.textContent = res.body.rows[k].push; }
        });
        document.body.dataset.lastMs = String(Math.round(performance.now() - t0));  // for the benchmark
        document.body.dataset.saved = String(Number(document.body.dataset.saved || 0) + 1);
      })
      .catch(function () { status.textContent = "The answer was not saved (the review server is not reachable)."; });
  }
  document.querySelectorAll("form.concept").forEach(function (form) {
    form.addEventListener("change", function () { send(form); });
    form.addEventListener("submit", function (e) { e.preventDefault(); send(form); });
  });
  document.querySelectorAll("form.diagnosis").forEach(function (form) {
    form.addEventListener("submit", function (e) { e.preventDefault(); send(form); });
    form.querySelector("select").addEventListener("change", function () { send(form); });
  });
})();
