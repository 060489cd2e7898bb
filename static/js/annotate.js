// Keyboard-driven rating. Keys pick radios and submit the form; htmx swaps in the next item.
(function () {
  "use strict";
  let shownAt = performance.now();

  const CHOICE_KEYS = { "1": "left", ArrowLeft: "left", "2": "right", ArrowRight: "right",
                        t: "tie", x: "both_bad" };
  const STRENGTH_KEYS = { q: "1", w: "2", e: "3" };

  function pick(form, name, value) {
    const input = form.querySelector(`input[name="${name}"][value="${value}"]`);
    if (input) { input.checked = true; input.dispatchEvent(new Event("change", { bubbles: true })); }
  }

  // htmx 2 wires up swapped-in forms in its settle step, ~20 ms after the swap; a fast key press
  // inside that window would otherwise fall through to a native submit and a full page load.
  function submit(form) {
    if (window.htmx) window.htmx.process(form);
    form.requestSubmit();
  }

  function typing(target) {
    return target && (target.tagName === "TEXTAREA" || target.tagName === "SELECT" ||
      (target.tagName === "INPUT" && target.type === "text"));
  }

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const form = document.getElementById("judgment-form");
    if (typing(event.target)) {
      if (event.key === "Escape") event.target.blur();
      return;
    }
    if (event.key === "?") {
      const details = document.getElementById("instructions");
      if (details) details.open = !details.open;
      event.preventDefault();
      return;
    }
    if (!form) {
      // No item held yet: Enter presses Start (it claims the next item; GET never does).
      const start = document.getElementById("start-form");
      if (start && event.key === "Enter" &&
          !(event.target.closest && event.target.closest("button, a, summary"))) {
        submit(start); event.preventDefault();
      }
      return;
    }
    if (event.key in CHOICE_KEYS) { pick(form, "choice", CHOICE_KEYS[event.key]); event.preventDefault(); }
    else if (event.key in STRENGTH_KEYS) { pick(form, "strength", STRENGTH_KEYS[event.key]); event.preventDefault(); }
    else if (event.key === "r") { form.querySelector("textarea[name=rationale]").focus(); event.preventDefault(); }
    else if (event.key === "s") {
      const skip = document.getElementById("skip-form");
      if (skip) { submit(skip); event.preventDefault(); }
    } else if (event.key === "Enter") {
      // A focused button, link or summary keeps its own Enter (Skip, Log out, Instructions).
      if (event.target.closest && event.target.closest("button, a, summary")) return;
      submit(form); event.preventDefault();
    }
  });

  // Time spent on an item: from its appearance to its submission.
  document.addEventListener("submit", function (event) {
    const field = event.target.querySelector("input[name=seconds_spent]");
    if (field) field.value = ((performance.now() - shownAt) / 1000).toFixed(2);
  }, true);
  document.addEventListener("htmx:afterSwap", function () {
    shownAt = performance.now();
    window.scrollTo({ top: 0 });
  });
  // A left/right choice needs a strength: say so instead of a silent server round trip.
  document.addEventListener("htmx:confirm", function (event) {
    const form = event.target;
    if (form.id !== "judgment-form") return;
    const choice = form.querySelector("input[name=choice]:checked");
    const strength = form.querySelector("input[name=strength]:checked");
    if (choice && (choice.value === "left" || choice.value === "right") && !strength) {
      event.preventDefault();
      const box = form.querySelector("#strength");
      box.classList.add("missing");
      box.querySelector("legend").textContent = "Strength: press q, w or e";
    }
  });
})();
