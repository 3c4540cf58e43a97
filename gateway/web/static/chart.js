// A small dependency-free glucose chart on <canvas>: target band, readings coloured by range,
// an optional dashed forecast line, hour ticks. Redraws at the canvas's CSS size × devicePixelRatio.

export const LOW_MG_DL = 70;
export const HIGH_MG_DL = 180;
const URGENT_LOW_MG_DL = 54;

export function rangeClass(mgDl) {
  if (mgDl < LOW_MG_DL) return "low";
  if (mgDl > HIGH_MG_DL) return "high";
  return "inrange";
}

const COLOURS = { low: "#c62828", high: "#d9822b", inrange: "#2e8b57" };

// readings: [{time: Date, mgDl}], forecast: [{time: Date, mgDl}] | null
export function drawGlucoseChart(canvas, { readings, forecast, from, to }) {
  const ratio = window.devicePixelRatio || 1;
  const cssW = canvas.clientWidth || 600;
  const cssH = canvas.clientHeight || 300;
  canvas.width = Math.round(cssW * ratio);
  canvas.height = Math.round(cssH * ratio);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, cssW, cssH);

  const pad = { l: 38, r: 10, t: 10, b: 24 };
  const w = cssW - pad.l - pad.r;
  const h = cssH - pad.t - pad.b;
  const all = readings.concat(forecast || []);
  const yMax = Math.max(300, ...all.map((p) => p.mgDl + 20));
  const yMin = 40;
  const t0 = from.getTime();
  const t1 = to.getTime();
  const x = (t) => pad.l + ((t - t0) / (t1 - t0)) * w;
  const y = (v) => pad.t + (1 - (v - yMin) / (yMax - yMin)) * h;

  ctx.fillStyle = "rgba(46,139,87,0.12)";
  ctx.fillRect(pad.l, y(HIGH_MG_DL), w, y(LOW_MG_DL) - y(HIGH_MG_DL));
  ctx.font = "11px system-ui, sans-serif";
  ctx.textBaseline = "middle";
  ctx.textAlign = "right";
  for (const level of [URGENT_LOW_MG_DL, LOW_MG_DL, HIGH_MG_DL, 250]) {
    ctx.strokeStyle = level === URGENT_LOW_MG_DL ? "rgba(198,40,40,.5)" : "#d9dee5";
    ctx.setLineDash([3, 3]);
    ctx.beginPath();
    ctx.moveTo(pad.l, y(level));
    ctx.lineTo(pad.l + w, y(level));
    ctx.stroke();
    ctx.setLineDash([]);
    ctx.fillStyle = "#5b6470";
    ctx.fillText(String(level), pad.l - 4, y(level));
  }
  // Hour ticks in local time.
  ctx.textAlign = "center";
  ctx.textBaseline = "top";
  const tick = new Date(t0);
  tick.setMinutes(0, 0, 0);
  const stepH = (t1 - t0) > 7 * 3600e3 ? 2 : 1;
  for (let t = tick.getTime() + 3600e3; t < t1; t += 3600e3) {
    const d = new Date(t);
    if (d.getHours() % stepH !== 0) continue;
    ctx.strokeStyle = "#eef1f5";
    ctx.beginPath();
    ctx.moveTo(x(t), pad.t);
    ctx.lineTo(x(t), pad.t + h);
    ctx.stroke();
    ctx.fillStyle = "#5b6470";
    ctx.fillText(`${String(d.getHours()).padStart(2, "0")}:00`, x(t), pad.t + h + 6);
  }
  ctx.strokeStyle = "#d9dee5";
  ctx.strokeRect(pad.l, pad.t, w, h);

  if (forecast && forecast.length) {
    ctx.strokeStyle = "#1f4e9c";
    ctx.lineWidth = 2;
    ctx.setLineDash([6, 4]);
    ctx.beginPath();
    forecast.forEach((p, i) => {
      const px = x(p.time.getTime());
      const py = y(p.mgDl);
      if (i === 0) ctx.moveTo(px, py); else ctx.lineTo(px, py);
    });
    ctx.stroke();
    ctx.setLineDash([]);
    ctx.lineWidth = 1;
  }
  for (const p of readings) {
    const t = p.time.getTime();
    if (t < t0 || t > t1) continue;
    ctx.fillStyle = COLOURS[rangeClass(p.mgDl)];
    ctx.beginPath();
    ctx.arc(x(t), y(p.mgDl), 3, 0, 2 * Math.PI);
    ctx.fill();
  }
  if (!readings.length) {
    ctx.fillStyle = "#5b6470";
    ctx.textAlign = "center";
    ctx.textBaseline = "middle";
    ctx.font = "14px system-ui, sans-serif";
    ctx.fillText("no readings in this window", pad.l + w / 2, pad.t + h / 2);
  }
}
