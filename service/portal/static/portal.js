// Live updates for the open page: the patient's events arrive by Server-Sent Events
// (cookie-authenticated, same origin). Events carry ids only; the page re-reads what it shows.
(function () {
  "use strict";
  var url = document.body.getAttribute("data-events");
  if (!url || !window.EventSource) { return; }
  var live = document.getElementById("direct");
  var MESSAGES = {
    "document": "Un nouveau document est disponible dans votre espace.",
    "message": "Vous avez reçu un nouveau message.",
    "emergency-access": "Un accès en urgence à votre dossier vient d'être ouvert."
  };

  function announce(text) {
    if (live) { live.textContent = text; }
  }

  // Re-read this page and swap in the parts an event may change (list, unread count).
  function refresh(ids) {
    fetch(window.location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) {
        if (!html) { return; }
        var fresh = new DOMParser().parseFromString(html, "text/html");
        ids.forEach(function (id) {
          var now = document.getElementById(id);
          var next = fresh.getElementById(id);
          if (now && next) { now.replaceWith(document.importNode(next, true)); }
        });
      })
      .catch(function () { /* the next event or a reload shows it */ });
  }

  var source = new EventSource(url, { withCredentials: true });
  Object.keys(MESSAGES).forEach(function (topic) {
    source.addEventListener(topic, function () {
      announce(MESSAGES[topic]);
      refresh(["liste-documents", "non-lus", "liste-messages", "historique-acces"]);
    });
  });
  source.onerror = function () {
    // 401 after logout or expiry: stop; otherwise EventSource reconnects by itself.
    if (source.readyState === EventSource.CLOSED) { source.close(); }
  };
})();
