// apikm web UI: the few interactions that help, written out; the pages work without it.
(function () {
  "use strict";

  function textOf(id) {
    var el = document.getElementById(id);
    if (!el) return "";
    return el.tagName === "INPUT" || el.tagName === "TEXTAREA" ? el.value : el.textContent;
  }

  function fallbackCopy(text) {
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "visually-hidden";
    document.body.appendChild(area);
    area.select();
    var ok = false;
    try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
    document.body.removeChild(area);
    return ok ? Promise.resolve() : Promise.reject(new Error("copy refused"));
  }

  function copy(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text).catch(function () { return fallbackCopy(text); });
    }
    return fallbackCopy(text);
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy]");
    if (!button) return;
    var id = button.getAttribute("data-copy");
    var status = document.querySelector('[data-copy-status="' + id + '"]');
    copy(textOf(id)).then(function () {
      var label = button.textContent;
      button.textContent = "Copied";
      if (status) status.textContent = "Copied to the clipboard.";
      setTimeout(function () { button.textContent = label; }, 2000);
    }, function () {
      if (status) status.textContent = "Copying was blocked: select the text and press Ctrl+C.";
    });
  });

  // A click in the key field selects all of it, so a manual copy takes one keystroke.
  document.addEventListener("focusin", function (event) {
    if (event.target.matches && event.target.matches("[data-select-on-focus]")) event.target.select();
  });

  // Times are rendered in UTC; show them in the viewer's own time zone (the UTC text stays
  // in the title, and is what a browser without JavaScript shows).
  function localTimes() {
    var format;
    try {
      format = new Intl.DateTimeFormat(undefined, { year: "numeric", month: "2-digit", day: "2-digit",
        hour: "2-digit", minute: "2-digit", hourCycle: "h23", timeZoneName: "short" });
    } catch (e) { return; }
    document.querySelectorAll("time[data-local]").forEach(function (el) {
      var when = new Date(el.getAttribute("datetime"));
      if (isNaN(when.getTime())) return;
      el.textContent = format.format(when);
      el.setAttribute("data-localised", "");
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", localTimes);
  else localTimes();

  // Picking a date selects the "Until a date" expiry choice.
  document.addEventListener("input", function (event) {
    if (event.target.id !== "expiry_date") return;
    var radio = document.querySelector('input[name="expiry"][value="date"]');
    if (radio) radio.checked = true;
  });
})();
