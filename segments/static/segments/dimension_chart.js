// Bar chart of a dimension's layer sizes (admin change form). Data comes from the
// json_script element rendered by the template; Chart.js is vendored (no CDN).
document.addEventListener("DOMContentLoaded", function () {
  var source = document.getElementById("layer-sizes-data");
  var canvas = document.getElementById("layer-sizes-chart");
  if (!source || !canvas || !window.Chart) {
    return;
  }
  var data = JSON.parse(source.textContent);
  new window.Chart(canvas, {
    type: "bar",
    data: {
      labels: data.labels,
      datasets: [{ label: "Customers", data: data.sizes, backgroundColor: "#417690" }],
    },
    options: {
      indexAxis: "y",
      animation: false,
      plugins: { legend: { display: false } },
      scales: { x: { beginAtZero: true, ticks: { precision: 0 } } },
    },
  });
  canvas.dataset.rendered = "true";
});
