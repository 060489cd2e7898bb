/* Gaplab run page: loss, reward and KL charts from the run's metrics JSON, kept live.
 *
 * #run-charts carries data-url (training-run-metrics). The first fetch takes every metric; then,
 * every 2 s while the run has not ended, only rows after the last step seen (minus one: a step's
 * metrics may arrive in two writes; points are keyed by step, so a repeat replaces). Each
 * <canvas data-group="loss|reward|kl|other"> draws the metrics the server put in its group with
 * the vendored Chart.js 4. After the terminal answer one last fetch is drawn and polling stops.
 * A drawn canvas has data-points="N" (points drawn) for tests and screen readers; a group's box
 * stays hidden until a metric of that group arrives.
 */
(function () {
  "use strict";

  const PALETTE = ["#3454d1", "#e07a1f", "#067647", "#b42318", "#7a2fb4", "#0e7090",
                   "#667085", "#c11574"];
  const POLL_MS = 2000;

  function chartFor(canvas, title) {
    return new Chart(canvas, {
      type: "line",
      data: { datasets: [] },
      options: {
        animation: false,
        responsive: true,
        maintainAspectRatio: false,
        interaction: { mode: "nearest", intersect: false },
        parsing: false,
        scales: {
          x: { type: "linear", title: { display: true, text: "step" }, ticks: { precision: 0 } },
          y: { title: { display: true, text: title } },
        },
        plugins: { title: { display: true, text: title }, legend: { position: "bottom" } },
      },
    });
  }

  function start(box) {
    const url = box.dataset.url;
    const charts = {};
    const points = {};  // metric name -> Map(step -> value)
    const groups = {};  // metric name -> chart group
    let lastStep = null;
    let timer = null;

    function chart(group, titles) {
      if (!charts[group]) {
        const canvas = box.querySelector(`canvas[data-group="${group}"]`);
        if (!canvas || typeof Chart === "undefined") return null;
        // Boxes start hidden (run.html): a group with no metric (a method that reports no
        // reward) takes no room; shown before drawing, so Chart.js sizes it.
        const figure = canvas.closest("figure");
        if (figure) figure.hidden = false;
        charts[group] = chartFor(canvas, titles[group] || group);
      }
      return charts[group];
    }

    function draw(data) {
      Object.entries(data.series).forEach(([name, rows]) => {
        const map = points[name] || (points[name] = new Map());
        rows.forEach(([step, value]) => map.set(step, value));
      });
      Object.assign(groups, data.groups);
      Object.keys(points).forEach((name) => {
        const group = groups[name] || "other";
        const c = chart(group, data.titles);
        if (!c) return;
        let ds = c.data.datasets.find((d) => d.label === name);
        if (!ds) {
          const color = PALETTE[c.data.datasets.length % PALETTE.length];
          ds = { label: name, data: [], borderColor: color, backgroundColor: color,
                 borderWidth: 2, pointRadius: 0, pointHitRadius: 6, tension: 0 };
          c.data.datasets.push(ds);
        }
        ds.data = Array.from(points[name].entries()).sort((a, b) => a[0] - b[0])
          .map(([x, y]) => ({ x: x, y: y }));
      });
      Object.values(charts).forEach((c) => {
        c.update("none");
        c.canvas.dataset.points = String(
          c.data.datasets.reduce((n, d) => n + d.data.length, 0));
      });
      if (data.last_step !== null && data.last_step !== undefined) {
        lastStep = lastStep === null ? data.last_step : Math.max(lastStep, data.last_step);
      }
      box.dataset.lastStep = lastStep === null ? "" : String(lastStep);
    }

    function fetchOnce() {
      const after = lastStep === null || lastStep < 1 ? "" : `?after_step=${lastStep - 1}`;
      return fetch(url + after, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then((r) => (r.ok ? r.json() : Promise.reject(new Error(`HTTP ${r.status}`))))
        .then((data) => { draw(data); return data; });
    }

    function tick() {
      fetchOnce().then((data) => {
        if (data.terminal) {
          box.dataset.terminal = "true";  // the last answer is drawn; nothing more will come
          return;
        }
        timer = setTimeout(tick, POLL_MS);
      }).catch((err) => {
        console.error("gaplab training charts:", err);
        timer = setTimeout(tick, POLL_MS * 2);
      });
    }

    tick();
    return () => clearTimeout(timer);
  }

  function init() {
    const box = document.getElementById("run-charts");
    if (box && box.dataset.url) start(box);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
