/* Gaplab quality dashboards: draw the charts whose data the page embeds with json_script.
 *
 * Each <canvas data-chart="KIND" data-source="ID"> reads its JSON from <script id="ID"> (Django's
 * json_script filter, so the data is never parsed as HTML) and is drawn with the vendored
 * Chart.js 4 (static/vendor/chart.umd.min.js, loaded before this file). A drawn canvas gets
 * data-drawn="true". Canvases that arrive in an htmx swap are drawn after the swap settles.
 */
(function () {
  "use strict";

  const COLORS = {
    A: "#3454d1", B: "#e07a1f", tie: "#98a2b3", both_bad: "#b42318",
    gold: "#067647", position: "#3454d1", length: "#e07a1f", reference: "#667085",
  };
  const STREAM_COLORS = {
    gold_error: "#b42318", accuracy: "#912018", position: "#3454d1", length: "#e07a1f",
    sycophancy: "#7a2fb4", speed: "#0e9384",
  };
  const LABEL_NAMES = { A: "A", B: "B", tie: "tie", both_bad: "both bad" };

  // Vertical dashed lines at drift-alert onsets and a small triangle at each alarm, both in
  // the annotator's judgment numbers (the x axis; the alert tables show the same numbers). A few
  // lines of canvas code instead of chartjs-plugin-annotation: one more vendored file for one
  // line type is not worth it.
  const markerPlugin = {
    id: "gaplabMarkers",
    afterDatasetsDraw(chart, _args, options) {
      const markers = (options && options.markers) || [];
      const scale = chart.scales.x;
      const area = chart.chartArea;
      if (!scale || !markers.length) return;
      const ctx = chart.ctx;
      ctx.save();
      ctx.setLineDash([5, 4]);
      ctx.lineWidth = 1.5;
      ctx.font = "11px system-ui, sans-serif";
      markers.forEach((m, i) => {
        const px = scale.getPixelForValue(m.x);
        if (px < area.left || px > area.right) return;
        const color = STREAM_COLORS[m.stream] || "#b42318";
        ctx.strokeStyle = color;
        ctx.fillStyle = color;
        ctx.beginPath();
        ctx.moveTo(px, area.top);
        ctx.lineTo(px, area.bottom);
        ctx.stroke();
        ctx.fillText(`${m.label} #${m.x}`, px + 3, area.top + 11 + 12 * (i % 3));
        if (m.alarm !== null && m.alarm !== undefined) {
          const ax = scale.getPixelForValue(m.alarm);
          if (ax >= area.left && ax <= area.right) {
            ctx.beginPath();
            ctx.moveTo(ax, area.bottom);
            ctx.lineTo(ax - 5, area.bottom - 8);
            ctx.lineTo(ax + 5, area.bottom - 8);
            ctx.closePath();
            ctx.fill();
          }
        }
      });
      ctx.restore();
    },
  };

  function reference(y, x0, x1, label) {
    return {
      label: label, data: [{ x: x0, y: y }, { x: x1, y: y }], borderColor: COLORS.reference,
      borderDash: [4, 4], borderWidth: 1, pointRadius: 0, fill: false,
    };
  }

  function line(label, data, color) {
    return {
      label: label, data: data, borderColor: color, backgroundColor: color,
      borderWidth: 2, pointRadius: 0, pointHitRadius: 6, tension: 0, spanGaps: true,
      clip: 4,  // a share of exactly 0 or 1 stays visible on the axis edge
    };
  }

  function shareAxis(title) {
    return { min: 0, max: 1, title: { display: true, text: title } };
  }

  function baseOptions(title) {
    return {
      animation: false,
      responsive: true,
      maintainAspectRatio: false,
      interaction: { mode: "nearest", intersect: false },
      plugins: { title: { display: true, text: title }, legend: { position: "bottom" } },
    };
  }

  function timelineTooltip() {
    return {
      callbacks: {
        afterLabel(item) {
          const raw = item.raw || {};
          return raw.n ? `over ${raw.n} items, ${raw.t ? raw.t.slice(0, 16).replace("T", " ") : ""}` : "";
        },
      },
    };
  }

  function xMax(data) {
    return Math.max(data.x_max || data.n, 2);
  }

  function linearX(data) {
    return { type: "linear", min: 1, max: xMax(data),
             title: { display: true, text: "judgment number" }, ticks: { precision: 0 } };
  }

  const BUILDERS = {
    "timeline-gold"(data) {
      const datasets = [line(`gold accuracy (last ${data.window} gold items)`,
                             data.series.gold, COLORS.gold)];
      if (data.threshold !== undefined && data.threshold !== null) {
        datasets.push(reference(data.threshold, 1, xMax(data), "pause threshold"));
      }
      const options = baseOptions("Rolling gold accuracy");
      options.scales = { x: linearX(data), y: shareAxis("share correct") };
      options.plugins.gaplabMarkers = { markers: data.markers };
      options.plugins.tooltip = timelineTooltip();
      return { type: "line", data: { datasets: datasets }, options: options,
               plugins: [markerPlugin] };
    },
    "timeline-bias"(data) {
      const datasets = [
        line(`chose left (last ${data.window} A/B answers)`, data.series.position,
             COLORS.position),
        line(`chose longer (last ${data.window} A/B answers)`, data.series.length,
             COLORS.length),
        reference(0.5, 1, xMax(data), "no bias"),
      ];
      const options = baseOptions("Rolling position and length bias");
      options.scales = { x: linearX(data), y: shareAxis("share") };
      options.plugins.gaplabMarkers = { markers: data.markers };
      options.plugins.tooltip = timelineTooltip();
      return { type: "line", data: { datasets: datasets }, options: options,
               plugins: [markerPlugin] };
    },
    "label-mix"(data) {
      const datasets = Object.keys(LABEL_NAMES).map((label) => ({
        label: LABEL_NAMES[label], data: data.mix[label], backgroundColor: COLORS[label],
        borderWidth: 0, stack: "mix",
      }));
      const options = baseOptions("Label mix over time");
      options.scales = {
        x: { stacked: true, title: { display: true, text: "judgments" } },
        y: { stacked: true, min: 0, max: 1, title: { display: true, text: "share" } },
      };
      return { type: "bar", data: { labels: data.labels, datasets: datasets }, options: options };
    },
    "position-over-time"(data) {
      const half = data.labels.map(() => 0.5);
      const datasets = [
        { label: "share of A/B answers picking the left response", data: data.left_share,
          borderColor: COLORS.position, backgroundColor: COLORS.position, borderWidth: 2,
          pointRadius: 2, spanGaps: true, clip: 4 },
        { label: "no bias", data: half, borderColor: COLORS.reference, borderDash: [4, 4],
          borderWidth: 1, pointRadius: 0 },
      ];
      const options = baseOptions("Position bias over time");
      options.scales = { x: { title: { display: true, text: "judgments" } },
                         y: shareAxis("share left") };
      return { type: "line", data: { labels: data.labels, datasets: datasets }, options: options };
    },
  };

  function draw(canvas) {
    if (typeof Chart === "undefined" || Chart.getChart(canvas)) return;
    const source = document.getElementById(canvas.dataset.source);
    const build = BUILDERS[canvas.dataset.chart];
    if (!source || !build) {
      console.error(`gaplab charts: no data or builder for #${canvas.id}`);
      return;
    }
    new Chart(canvas, build(JSON.parse(source.textContent)));
    canvas.dataset.drawn = "true";
  }

  function drawAll(root) {
    (root || document).querySelectorAll("canvas[data-chart]").forEach(draw);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", () => drawAll(document));
  } else {
    drawAll(document);
  }
  document.addEventListener("htmx:afterSettle", (event) => drawAll(event.detail.elt));
  window.gaplabCharts = { drawAll: drawAll };
})();
