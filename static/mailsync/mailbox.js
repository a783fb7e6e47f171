// Keyboard use of the mailbox: j/k or the arrow keys move between rows (each row is a
// link, so Tab, Enter and the browser's own focus ring work too), "/" goes to the
// search box, "u" back to the list the message was opened from.
(function () {
  "use strict";
  var list = document.querySelector("[data-keyboard-list]");
  var search = document.getElementById("mail-search-input");

  function rows() {
    return list ? Array.prototype.slice.call(list.querySelectorAll("a.mail-row-link, a.thread-link")) : [];
  }

  function move(step) {
    var links = rows();
    if (!links.length) return false;
    var index = links.indexOf(document.activeElement);
    var next = index < 0 ? (step > 0 ? 0 : links.length - 1) : Math.min(links.length - 1, Math.max(0, index + step));
    links[next].focus();
    links[next].scrollIntoView({ block: "nearest" });
    return true;
  }

  function typing(target) {
    return target && (target.isContentEditable || /^(input|textarea|select)$/i.test(target.tagName));
  }

  document.addEventListener("keydown", function (event) {
    if (event.altKey || event.ctrlKey || event.metaKey) return;
    if (typing(event.target)) {
      if (event.key === "Escape") event.target.blur();
      return;
    }
    // The arrows move between rows on a list only: on a message they scroll it.
    var onList = list && list.classList.contains("mail-rows");
    var handled = false;
    if (event.key === "j" || (onList && event.key === "ArrowDown")) handled = move(1);
    else if (event.key === "k" || (onList && event.key === "ArrowUp")) handled = move(-1);
    else if (event.key === "/" && search) {
      search.focus();
      search.select();
      handled = true;
    } else if (event.key === "u" && document.querySelector(".thread")) {
      var back = document.referrer && new URL(document.referrer).origin === location.origin;
      if (back) history.back();
      else location.href = document.getElementById("nav-mail").href;
      handled = true;
    }
    if (handled) event.preventDefault();
  });
})();
