// A Web Worker that runs encoder.js for the page: the split model's features off the main thread,
// one worker per core. Messages: {type: "init", enc, table} once, then {id, o, d} (compact rays).
import { encodeRays } from "./encoder.js";

let enc = null;
let table = null;

self.onmessage = (ev) => {
  const m = ev.data;
  if (m.type === "init") {
    enc = m.enc;
    table = new Float32Array(m.table);
    self.postMessage({ type: "ready" });
    return;
  }
  const n = m.o.length / 3;
  const rows = new Int32Array(n);
  for (let i = 0; i < n; i++) rows[i] = i;
  const { features, hit } = encodeRays(m.o, m.d, rows, enc, table);
  self.postMessage({ id: m.id, features, hit }, [features.buffer, hit.buffer]);
};
