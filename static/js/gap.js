/* Gaplab gap pages: the noise-vs-gap chart from the data the page embeds with json_script.
 *
 * <canvas data-chart="noise-vs-gap" data-source="ID"> reads {datasets: [{method, points}]} from
 * <script id="ID"> (Django's json_script: never parsed as HTML). Each point is
 * {x: measured ε, y: gap slope, lo, hi, xlo, xhi, eps_true, exp, variant}; a {x: null, y: null}
 * point separates the runs of one method (one run per experiment and variant). Drawn with the
 * vendored Chart.js 4; the slope's interval (and ε's, when stored) as error bars by a small
 * plugin; a MAPS variant's runs are dashed with triangles. A drawn canvas gets data-drawn="true"
 * and data-points="N" (points drawn).
 */
(function () {
  "use strict";

  const COLORS = { tilting: "#3454d1", best_of_n: "#e07a1f", dpo: "#067647" };
  const PALETTE = ["#7a2fb4", "#0e7090", "#b42318", "#667085", "#c11574"];

  // Error bars: for each point with lo/hi a vertical segment with caps, and a horizontal one
  // for xlo/xhi. A few lines of canvas code instead of one more vendored plugin.
  const errorBars = {
    id: "gaplabErrorBars",
    afterDatasetsDraw(chart) {
      const ctx = chart.ctx;
      const xs = chart.scales.x;
      const ys = chart.scales.y;
      const area = chart.chartArea;
      ctx.save();
      ctx.beginPath();
      ctx.rect(area.left, area.top, area.right - area.left, area.bottom - area.top);
      ctx.clip();
      ctx.lineWidth = 1.2;
      chart.data.datasets.forEach((ds, i) => {
        if (!chart.isDatasetVisible(i)) return;
        ctx.strokeStyle = ds.borderColor;
        ds.data.forEach((p) => {
          if (p.x === null || p.y === null || p.x === undefined) return;
          const px = xs.getPixelForValue(p.x);
          const py = ys.getPixelForValue(p.y);
          if (p.lo !== null && p.lo !== undefined && p.hi !== null && p.hi !== undefined) {
            const top = ys.getPixelForValue(p.hi);
            const bottom = ys.getPixelForValue(p.lo);
            ctx.beginPath();
            ctx.moveTo(px, top); ctx.lineTo(px, bottom);
            ctx.moveTo(px - 4, top); ctx.lineTo(px + 4, top);
            ctx.moveTo(px - 4, bottom); ctx.lineTo(px + 4, bottom);
            ctx.stroke();
          }
          if (p.xlo !== null && p.xlo !== undefined && p.xhi !== null && p.xhi !== undefined) {
            ctx.beginPath();
            ctx.moveTo(xs.getPixelForValue(p.xlo), py);
            ctx.lineTo(xs.getPixelForValue(p.xhi), py);
            ctx.stroke();
          }
        });
      });
      ctx.restore();
    },
  };

  // The axes' range covers every interval, not only the points (Chart.js sees only x and y).
  function bounds(data, lo, hi, mid) {
    const vals = [];
    data.datasets.forEach((d) => d.points.forEach((p) => {
      [p[lo], p[hi], p[mid]].forEach((v) => {
        if (v !== null && v !== undefined && Number.isFinite(v)) vals.push(v);
      });
    }));
    if (!vals.length) return {};
    const min = Math.min(...vals);
    const max = Math.max(...vals);
    const pad = (max - min) * 0.08 || Math.abs(max) * 0.1 || 0.1;
    return { suggestedMin: min - pad, suggestedMax: max + pad };
  }

  function noiseVsGap(data) {
    const datasets = data.datasets.map((d, i) => {
      const color = COLORS[d.method] || PALETTE[i % PALETTE.length];
      return {
        label: d.method, data: d.points, borderColor: color, backgroundColor: color,
        showLine: true, spanGaps: false, borderWidth: 1.5, pointRadius: 4, pointHoverRadius: 6,
        // A MAPS variant's run is dashed with triangles; the baseline's solid with circles.
        pointStyle: (ctx) => (ctx.raw && ctx.raw.variant && ctx.raw.variant !== "baseline"
          ? "triangle" : "circle"),
        segment: {
          borderDash: (ctx) => (ctx.p0.raw && ctx.p0.raw.variant
            && ctx.p0.raw.variant !== "baseline" ? [6, 4] : undefined),
        },
      };
    });
    return {
      type: "scatter",
      data: { datasets: datasets },
      plugins: [errorBars],
      options: {
        animation: false,
        responsive: true,
        maintainAspectRatio: false,
        parsing: false,
        scales: {
          x: Object.assign({ type: "linear", title: { display: true, text: "label noise ε (measured)" } },
                           bounds(data, "xlo", "xhi", "x")),
          y: Object.assign({ title: { display: true, text: "gap slope in d (standardized)" } },
                           bounds(data, "lo", "hi", "y")),
        },
        plugins: {
          title: { display: true, text: "Noise vs gap growth" },
          legend: { position: "bottom" },
          tooltip: {
            callbacks: {
              label(item) {
                const p = item.raw || {};
                const interval = p.lo !== null && p.lo !== undefined
                  ? ` [${p.lo.toFixed(3)}, ${p.hi.toFixed(3)}]` : "";
                const truth = p.eps_true !== null && p.eps_true !== undefined
                  ? `, true ε ${p.eps_true.toFixed(3)}` : "";
                return `${item.dataset.label} #${p.exp} ${p.variant || "baseline"}: ε ${p.x.toFixed(3)}${truth},` +
                  ` slope ${p.y.toFixed(3)}${interval}`;
              },
            },
          },
        },
      },
    };
  }

  const BUILDERS = { "noise-vs-gap": noiseVsGap };

  function draw(canvas) {
    const build = BUILDERS[canvas.dataset.chart];
    const source = document.getElementById(canvas.dataset.source || "");
    if (!build || !source || typeof Chart === "undefined" || canvas.dataset.drawn) return;
    const data = JSON.parse(source.textContent);
    new Chart(canvas, build(data));
    canvas.dataset.drawn = "true";
    canvas.dataset.points = String(data.datasets.reduce(
      (n, d) => n + d.points.filter((p) => p.x !== null && p.x !== undefined).length, 0));
  }

  function init() {
    document.querySelectorAll("canvas[data-chart]").forEach(draw);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
