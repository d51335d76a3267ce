// The admin portal's few behaviours, served from this origin so that the Content-Security-Policy
// can forbid inline scripts. Each one looks for its elements and does nothing without them.
(function () {
  'use strict';
  function ready(f) {
    if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', f);
    else f();
  }
  ready(function () {
    // Users list: "select all" and the count of selected users.
    var all = document.getElementById('select-all');
    if (all) {
      var boxes = function () { return document.querySelectorAll('input[name=user_id]'); };
      var count = document.getElementById('selected-count');
      var update = function () {
        var n = 0; boxes().forEach(function (b) { if (b.checked) n++; });
        if (count) count.textContent = n ? n + ' selected' : 'Select users with the checkboxes, then choose an action.';
      };
      all.addEventListener('change', function () { boxes().forEach(function (b) { b.checked = all.checked; }); update(); });
      document.addEventListener('change', function (e) { if (e.target.name === 'user_id') update(); });
    }
    // New user: the mail question only for users activated now.
    var state = document.getElementById('n-state'), question = document.getElementById('mail-question');
    if (state && question) {
      var sync = function () { question.hidden = state.value !== 'ACTIVATED'; };
      state.addEventListener('change', sync); sync();
    }
    // Scheduling: the browser's time zone chosen when it is in the list.
    var zones = document.getElementById('time_zone');
    if (zones) {
      try {
        var z = Intl.DateTimeFormat().resolvedOptions().timeZone;
        for (var i = 0; i < zones.options.length; i++) if (zones.options[i].value === z) { zones.selectedIndex = i; break; }
      } catch (e) {}
    }
    // "Go back" links: back in history when there is one, else where the link points.
    document.querySelectorAll('a[data-back]').forEach(function (a) {
      a.addEventListener('click', function (e) {
        if (window.history.length > 1) { e.preventDefault(); window.history.back(); }
      });
    });
  });
})();
